"""What the depth prescan of ``cvmc.protocol.loads_json`` costs next to ``json.loads`` alone,
and how fast it refuses hostile texts. Prints figures; asserts nothing.

Usage: python bench/jsontext.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cvmc.protocol import JsonTextError, loads_json  # noqa: E402


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        with contextlib.suppress(JsonTextError):
            fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--repeat", type=int, default=20)
    repeat = args.parse_args().repeat
    slot = {"slot": 0, "state": "running", "vm_name": "its-u11-boinc-20120415", "cpus": 2}
    texts = {
        "heartbeat-like, 60 KiB": json.dumps({"slots": [slot] * 700}).encode(),
        "objects and arrays, 1 MiB": json.dumps({"slots": [slot] * 11000}).encode(),
        "one long string, 1 MiB": json.dumps("x" * (1024 * 1024 - 16)).encode(),
    }
    print(f"{'text':<28} {'bytes':>8} {'json.loads':>11} {'loads_json':>11} {'overhead':>9}")
    for name, text in texts.items():
        plain = best(functools.partial(json.loads, text), repeat)
        checked = best(functools.partial(loads_json, text), repeat)
        print(
            f"{name:<28} {len(text):>8} {plain * 1e3:>9.2f}ms {checked * 1e3:>9.2f}ms "
            f"{checked / plain:>8.1f}x"
        )
    hostile = {
        "40 kB of '['": b"[" * 40000,
        "1 MiB of '['": b"[" * (1024 * 1024),
        "1 MiB string of escaped quotes": b'"' + b'\\"' * (512 * 1024 - 1),
    }
    for name, text in hostile.items():
        took = best(functools.partial(loads_json, text), repeat)
        print(f"refuse {name:<34} {took * 1e3:>8.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
