"""Running external commands (VBoxManage, qemu-img): argv lists only, never a shell; a failure
becomes a HypervisorError naming the command and quoting its error output."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cvmc.agent.ports import HypervisorError

__all__ = ["Result", "Runner", "run_command"]


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str], float], Result]


def run_command(argv: Sequence[str], timeout_s: float = 120.0) -> Result:
    """Run ``argv``; raise HypervisorError unless it exits 0."""
    try:
        done = subprocess.run(  # noqa: S603 - argv list from the driver, no shell
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise HypervisorError(f"{argv[0]}: not found on PATH") from None
    except subprocess.TimeoutExpired:
        raise HypervisorError(f"{' '.join(argv[:3])}: no answer within {timeout_s:.0f} s") from None
    result = Result(done.returncode, done.stdout, done.stderr)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise HypervisorError(
            f"{' '.join(argv[:3])} failed (exit {done.returncode}): {' | '.join(detail[-3:])}"
        )
    return result
