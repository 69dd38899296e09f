"""The content of a research VM's cloud-init NoCloud seed, per VM start.

The seed's format is the grid's, written once in ``cvmc.gridmodel.seed`` (docs/research-vm-seed.md):
everything lands under ``/run/grid`` in the VM, where the ``research_vm`` role's reader and
cloud-init both find it. This module only maps a slot's identity files (as the desktop role
deploys them, see ``cvmc.agent.adapters.system.DirIdentities``) onto that format and gives
each start a fresh ``instance-id``, so cloud-init runs again. The ISO image around the two
files is written by ``cvmc.agent.adapters.nocloud``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from cvmc.gridmodel import seed as grid_seed
from cvmc.gridmodel import vpn

__all__ = ["IDENTITY_FILES", "instance_id", "seed_files"]

#: The files of a slot's identity directory and the seed field each one fills.
IDENTITY_FILES: dict[str, str] = {
    "client.conf": "client_config",
    "ca.crt": "ca_cert",
    "client.crt": "client_cert",
    "client.key": "client_key",
    "tls-crypt.key": "tls_crypt_key",
}
_SAFE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def _safe(value: str, name: str) -> str:
    if not _SAFE.match(value):
        raise ValueError(f"{name}: {value!r} may hold only letters, digits and . _ -")
    return value


def instance_id(desktop: str, slot: int, lease_id: str) -> str:
    """A fresh instance id per start: ``cvmc-<desktop>-slot<N>-<lease>``."""
    return f"cvmc-{_safe(desktop, 'desktop')}-slot{slot}-{_safe(lease_id, 'lease_id')}"


def hostname(desktop: str, slot: int) -> str:
    """The VM's host name: its tunnel identity's name (``lab-desktop-1-vm0``), unique in the pool,
    so that its slots (``slot1@lab-desktop-1-vm0``) never share a name with another VM's."""
    return vpn.identity_cn(desktop, slot, name="desktop")


def seed_files(
    *,
    desktop: str,
    slot: int,
    vm_name: str,
    lease_id: str,
    identity: Mapping[str, bytes],
    condor_token: bytes,
) -> tuple[bytes, bytes]:
    """(meta-data, user-data) for one start; ValueError names what is wrong or missing."""
    missing = sorted(set(IDENTITY_FILES) - set(identity))
    if missing:
        raise ValueError(f"slot {slot} identity: {', '.join(missing)} missing")
    fields = {field: identity[name].decode() for name, field in IDENTITY_FILES.items()}
    files = grid_seed.identity_files(
        vm_name=vm_name,
        slot=slot,
        condor_token=condor_token.decode(),
        name=f"slot {slot} identity",
        **fields,
    )
    meta = grid_seed.meta_data(instance_id(desktop, slot, lease_id), hostname(desktop, slot))
    return meta.encode(), grid_seed.user_data(files).encode()
