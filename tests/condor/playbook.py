"""Run the condor test playbooks with the real ansible-playbook, against this machine.

Hosts use connection local and write under a per-host ``htcondor_root`` in a temporary tree
(tests/condor/fixtures/local.yml), never into this machine's /etc. Installation stays off.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ansible_run import ROOT, ansible_playbook

__all__ = ["FIXTURES", "ROOT", "Run", "fresh_key", "run"]

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@dataclass(frozen=True)
class Run:
    rc: int
    output: str
    root: Path

    def tree(self, host: str) -> Path:
        """What the roles wrote for ``host`` (its htcondor_root)."""
        return self.root / host

    def config_d(self, host: str) -> Path:
        return self.tree(host) / "etc/condor/config.d"


def fresh_key() -> str:
    """A fresh signing key for one test run (never the lab's)."""
    return secrets.token_urlsafe(48)


def run(
    playbook: str,
    root: Path,
    extra: Mapping[str, object],
    *,
    inventory: str = "lab",
    overlay: str = "local.yml",
    args: Sequence[str] = (),
) -> Run:
    """ansible-playbook ``fixtures/<playbook>`` with ``extra`` vars; hosts write under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    proc = ansible_playbook(
        FIXTURES / playbook,
        [ROOT / "inventories" / inventory, FIXTURES / overlay],
        extra={"condor_test_root": str(root), **extra},
        extra_file=root.parent / f"{root.name}-extra.json",
        args=args,
    )
    return Run(proc.returncode, proc.stdout + proc.stderr, root)
