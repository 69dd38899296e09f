"""Run the real ansible-playbook from the tests: one place for the command and its environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")


def ansible_playbook(
    playbook: Path,
    inventories: Sequence[Path],
    *,
    extra: Mapping[str, object] | None = None,
    extra_file: Path | None = None,
    args: Sequence[str] = (),
    timeout: int = 600,
) -> subprocess.CompletedProcess[str]:
    """ansible-playbook with the project's ansible.cfg, plain output and no shared fact cache.

    ``extra`` is written to ``extra_file`` (JSON) and passed with ``-e @file``, so values keep
    their types.
    """
    argv = [ANSIBLE_PLAYBOOK]
    for inventory in inventories:
        argv += ["-i", str(inventory)]
    argv.append(str(playbook))
    if extra is not None:
        if extra_file is None:
            raise ValueError("extra needs extra_file")
        extra_file.write_text(json.dumps(dict(extra)))
        argv += ["-e", f"@{extra_file}"]
    argv += list(args)
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        # Facts of the lab's containers may sit in the shared cache; these runs are local.
        "ANSIBLE_CACHE_PLUGIN": "memory",
    }
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
