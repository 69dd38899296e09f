"""Load a rendered HTCondor configuration with HTCondor's own parser (the ``htcondor`` wheel).

The daemons cannot be installed here, but the wheel's ``htcondor2`` carries the real config
parser, metaknobs (``use role:...``, ``use security:...``) included. Each load runs in a fresh
Python process, because the parser reads ``CONDOR_CONFIG`` once at import and *exits the
process* on a syntax error or an unknown metaknob.

The packaged ``/etc/condor/condor_config`` is not there while installation is off, so a
stand-in with the same top-level settings (``RELEASE_DIR``, ``LOCAL_DIR``, ``LOCAL_CONFIG_DIR``)
roots the tree; everything the roles write lives in ``config.d`` and is read from there.

Subsystem overrides (``STARTD.KNOB``) are resolved the way HTCondor documents them: the
``SUBSYS.``-prefixed value wins over the plain one for that subsystem.

Also a command line, for molecule's verify step::

    python condor_config.py CONFIG_D SUBSYSTEM NAME [NAME ...]   # prints JSON {name: value}
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

STAND_IN = """\
# Stand-in for the packaged /etc/condor/condor_config (installation is off in tests).
RELEASE_DIR = /usr
LOCAL_DIR = /var
LOCAL_CONFIG_FILE =
REQUIRE_LOCAL_CONFIG_FILE = false
LOCAL_CONFIG_DIR = {config_d}
"""

_CHILD = """
import json, sys
import htcondor2
subsystem, names = sys.argv[1], sys.argv[2:]
param = htcondor2.param
out = {}
for name in names:
    value = param.get(f"{subsystem}.{name}") if subsystem else None
    out[name] = value if value is not None else param.get(name)
json.dump(out, sys.stdout)
"""


class ConfigError(RuntimeError):
    """HTCondor's parser refused the configuration; the message is its own."""


def load(config_d: Path, names: Sequence[str], subsystem: str = "") -> dict[str, object]:
    """The values of ``names`` after HTCondor parses the tree rooted at ``config_d``."""
    with tempfile.TemporaryDirectory(prefix="condor-config-") as tmp:
        root = Path(tmp) / "condor_config"
        root.write_text(STAND_IN.format(config_d=Path(config_d).resolve()))
        env = {**os.environ, "CONDOR_CONFIG": str(root)}
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, subsystem.upper(), *names],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    if proc.returncode != 0:
        raise ConfigError(f"HTCondor's parser refused {config_d}:\n{proc.stderr.strip()}")
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def main(argv: Sequence[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    config_d, subsystem, *names = argv
    try:
        values = load(Path(config_d), names, subsystem)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    json.dump(values, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
