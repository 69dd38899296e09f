"""Writing the agent's private files: temp file, fsync, rename, with a mode set at creation.

Every file with a secret (keys, credentials, disk passphrases, seeds) goes through
:func:`write_private`, so none is ever visible half-written or with a wider mode.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["write_private"]


def write_private(path: str, data: bytes, mode: int = 0o600, *, replace: bool = True) -> None:
    """Write ``data`` to ``path`` atomically with ``mode``.

    With ``replace=False`` an existing file is kept (first writer wins), for keys that must
    never be overwritten.
    """
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        written = 0
        while written < len(data):  # os.write may write less than asked
            written += os.write(fd, data[written:])
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)  # a full disk leaves no half-written temp file behind
        raise
    os.close(fd)
    try:
        if replace:
            os.replace(tmp, path)
        else:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
