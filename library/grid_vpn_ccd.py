#!/usr/bin/python
"""Keep OpenVPN's client-config-dir in line with the VM identities, in one pass."""

from __future__ import annotations

DOCUMENTATION = r"""
module: grid_vpn_ccd
short_description: Write one client-config-dir file per VPN identity, and remove the rest
description:
  - For every entry, writes C(<dir>/<instance>/<cn>) with C(ifconfig-push <address> <netmask>).
    That pins each research VM's tunnel address. Files of identities that are no longer
    listed, or that moved to another instance, are removed. Together with C(ccd-exclusive),
    a client without a file cannot connect.
  - One call handles all identities (24,000 at campus scale), where a loop of file tasks
    would take hours. Files are written to a temporary name and renamed.
  - Supports check mode and diff mode (a summary of added, changed and removed files).
options:
  dir:
    description: The client-config-dir root; one subdirectory per OpenVPN instance.
    type: path
    required: true
  instances:
    description: Names of all OpenVPN instances (their subdirectories are created and pruned).
    type: list
    elements: str
    required: true
  entries:
    description: The identities, as C({cn, instance, address, netmask}).
    type: list
    elements: dict
    required: true
author: Desktop grid maintainers
"""

EXAMPLES = r"""
- name: Pin every VM's tunnel address
  grid_vpn_ccd:
    dir: /etc/openvpn/grid/ccd
    instances: [rvpn0, rvpn1]
    entries: [{cn: lab-desktop-1-vm0, instance: rvpn0, address: 10.64.0.2, netmask: 255.255.248.0}]
"""

RETURN = r"""
added:
  description: Files created.
  returned: always
  type: list
  elements: str
updated:
  description: Files whose content changed.
  returned: always
  type: list
  elements: str
removed:
  description: Files removed.
  returned: always
  type: list
  elements: str
"""

import ipaddress
import os
import re
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule

NAME = re.compile(r"\A[a-z0-9][a-z0-9.-]{0,62}\Z")
INSTANCE = re.compile(r"\A[A-Za-z0-9_-]{1,32}\Z")


def _content(entry: dict[str, Any]) -> str:
    return (
        f"# {entry['cn']}: fixed tunnel address (written by grid_vpn_ccd)\n"
        f"ifconfig-push {entry['address']} {entry['netmask']}\n"
    )


def _write_atomic(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _validate(module: AnsibleModule) -> None:
    instances = module.params["instances"]
    bad = [name for name in instances if not INSTANCE.match(name)]
    if bad:
        module.fail_json(msg=f"instances: not valid instance names: {', '.join(bad)}")
    seen: set[str] = set()
    for i, entry in enumerate(module.params["entries"]):
        where = f"entries[{i}]"
        missing = {"cn", "instance", "address", "netmask"} - set(entry)
        if missing:
            module.fail_json(msg=f"{where}: missing {', '.join(sorted(missing))}")
        if not NAME.match(str(entry["cn"])):
            module.fail_json(msg=f"{where}.cn: {entry['cn']!r} is not a valid common name")
        if entry["cn"] in seen:
            module.fail_json(msg=f"{where}.cn: {entry['cn']!r} is listed twice")
        seen.add(entry["cn"])
        if entry["instance"] not in instances:
            module.fail_json(msg=f"{where}.instance: {entry['instance']!r} is not in instances")
        try:
            ipaddress.IPv4Address(entry["address"])
            ipaddress.IPv4Network(f"0.0.0.0/{entry['netmask']}")
        except ValueError as exc:
            module.fail_json(msg=f"{where}: {exc}")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "dir": {"type": "path", "required": True},
            "instances": {"type": "list", "elements": "str", "required": True},
            "entries": {"type": "list", "elements": "dict", "required": True},
        },
        supports_check_mode=True,
    )
    _validate(module)
    base = module.params["dir"]
    wanted = {
        os.path.join(base, e["instance"], e["cn"]): _content(e) for e in module.params["entries"]
    }
    present: dict[str, str] = {}
    for instance in module.params["instances"]:
        folder = os.path.join(base, instance)
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                path = os.path.join(folder, name)
                if os.path.isfile(path) and not name.startswith("."):
                    with open(path, encoding="utf-8") as handle:
                        present[path] = handle.read()
    added = sorted(p for p in wanted if p not in present)
    updated = sorted(p for p in wanted if p in present and present[p] != wanted[p])
    removed = sorted(p for p in present if p not in wanted)
    missing_dirs = [
        os.path.join(base, i)
        for i in module.params["instances"]
        if not os.path.isdir(os.path.join(base, i))
    ]
    changed = bool(added or updated or removed or missing_dirs)
    result: dict[str, Any] = {
        "changed": changed,
        "added": added,
        "updated": updated,
        "removed": removed,
    }
    if module._diff:  # AnsibleModule exposes diff mode only as this attribute
        result["diff"] = {
            "before": "".join(f"{p}\n" for p in sorted(present)),
            "after": "".join(f"{p}\n" for p in sorted(wanted)),
        }
    if module.check_mode or not changed:
        module.exit_json(**result)
    for folder in missing_dirs:
        os.makedirs(folder, mode=0o755, exist_ok=True)
    for path in removed:
        os.unlink(path)
    for path in added + updated:
        _write_atomic(path, wanted[path])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
