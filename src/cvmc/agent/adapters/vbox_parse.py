"""Parsers for VBoxManage output that tolerate versions 6.1, 7.0 and 7.1.

``showvminfo --machinereadable`` prints one ``key=value`` per line. Keys may be quoted
(``"SATA-0-0"="..."``, and since 7.0 any key containing ``=``); string values are quoted and,
since 7.0, backslashes and double quotes inside them are escaped with a backslash, while
6.1 printed some values (the description) raw, newlines included. Numbers are bare. Keys come
and go between releases, so the parser keeps every key and the driver reads only the few it
needs (``VMState``, ``name``, ``UUID``, ``memory``, ``cpus``) with defaults. Windows line
endings are accepted.

``list runningvms`` / ``list vms`` print ``"name" {uuid}`` per line; names may contain spaces
and quotes, so the UUID is matched from the end.
"""

from __future__ import annotations

import re

__all__ = ["parse_list", "parse_machinereadable", "parse_version", "vm_state"]

_LIST = re.compile(r'^"(?P<name>.*)" \{(?P<uuid>[0-9a-fA-F-]{36})\}\s*$')
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")
#: VMState values meaning "a VM process is up" (VBoxManage machineStateToName, short form).
RUNNING_STATES = frozenset(
    {"running", "paused", "starting", "stopping", "saving", "restoring", "livesnapshotting",
     "onlinesnapshotting", "teleporting", "teleportingpausedvm", "teleportingin",
     "deletingsnapshotlive", "deletingsnapshotlivepaused", "gurumeditation"}
)  # fmt: skip


def _unquote(text: str, pos: int, *, key: bool = False) -> tuple[str, int]:
    """Read a quoted string starting at ``text[pos] == '"'``; return (value, next position).

    A key ends at its first unescaped quote. A value's closing quote is the one that ends its
    line, because 6.1 printed some values (the description) raw, quotes and newlines included.
    """
    out: list[str] = []
    i = pos + 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
            out.append(text[i + 1])
            i += 2
            continue
        if char == '"':
            if key:
                return "".join(out), i + 1
            end = text.find("\n", i)
            rest = text[i + 1 : end if end != -1 else len(text)]
            if rest.strip() == "":
                return "".join(out), (end + 1 if end != -1 else len(text))
        out.append(char)
        i += 1
    return "".join(out), len(text)


def parse_machinereadable(text: str) -> dict[str, str]:
    """``showvminfo --machinereadable`` output as a dict (later keys win)."""
    text = text.replace("\r\n", "\n")
    result: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        if text[pos] in "\n \t":
            pos += 1
            continue
        if text[pos] == '"':
            key, pos = _unquote(text, pos, key=True)
        else:
            eq = text.find("=", pos)
            nl = text.find("\n", pos)
            if eq == -1 or (nl != -1 and nl < eq):
                pos = nl + 1 if nl != -1 else len(text)  # not a key=value line: skip
                continue
            key, pos = text[pos:eq].strip(), eq
        if pos >= len(text) or text[pos] != "=":
            nl = text.find("\n", pos)
            pos = nl + 1 if nl != -1 else len(text)
            continue
        pos += 1
        if pos < len(text) and text[pos] == '"':
            value, pos = _unquote(text, pos)
        else:
            nl = text.find("\n", pos)
            end = nl if nl != -1 else len(text)
            value, pos = text[pos:end].strip(), end + 1
        result[key] = value
    return result


def parse_list(text: str) -> dict[str, str]:
    """``list vms`` / ``list runningvms`` output: name -> UUID."""
    result = {}
    for line in text.replace("\r\n", "\n").splitlines():
        match = _LIST.match(line)
        if match:
            result[match["name"]] = match["uuid"].lower()
    return result


def vm_state(info: dict[str, str]) -> str:
    """The short VM state (``running``, ``poweroff``, ``aborted``, ``aborted-saved``...)."""
    return info.get("VMState", "unknown").strip().lower()


def parse_version(text: str) -> tuple[int, int, int]:
    """``VBoxManage --version`` (``7.0.14r161095``, ``6.1.50_Ubuntur161033``) as a tuple."""
    match = _VERSION.search(text)
    if not match:
        raise ValueError(f"VBoxManage --version: {text.strip()!r} is not a version")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch
