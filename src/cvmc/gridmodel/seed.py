"""The research VM's cloud-init NoCloud seed: what it carries and how it is written.

A seed is two files, ``meta-data`` and ``user-data``. The identity travels in user-data as a
``#cloud-config`` document whose ``write_files`` entries all land under ``/run/grid`` (a tmpfs
in the VM), so nothing secret is ever written to the image. cloud-init understands this form,
and so does the small reader the ``research_vm`` role installs for images without cloud-init.
The document is written as JSON, which is valid YAML, so no YAML library is needed here.
See docs/research-vm-seed.md.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping

from cvmc.gridmodel import classad

RUNTIME_DIR = "/run/grid"
_INSTANCE_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


def identity_files(
    *,
    vm_name: str,
    slot: int,
    client_config: str,
    ca_cert: str,
    client_cert: str,
    client_key: str,
    tls_crypt_key: str,
    condor_token: str | None = None,
    name: str = "seed",
) -> dict[str, tuple[bytes, int]]:
    """Path -> (content, mode) of every file the seed writes in the VM."""
    classad.validate_vm_name(vm_name, name=f"{name}.vm_name")
    if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < 100:
        raise ValueError(f"{name}.slot: {slot!r} is not a slot number (0-99)")
    pems = {"ca_cert": ca_cert, "client_cert": client_cert, "client_key": client_key}
    for field, value in pems.items():
        if "-----BEGIN " not in value:
            raise ValueError(f"{name}.{field}: not a PEM document")
    if "-----BEGIN OpenVPN Static key" not in tls_crypt_key:
        raise ValueError(f"{name}.tls_crypt_key: not an OpenVPN static key")
    files = {
        f"{RUNTIME_DIR}/vm_name": (f"{vm_name}\n".encode(), 0o644),
        f"{RUNTIME_DIR}/slot": (f"{slot}\n".encode(), 0o644),
        f"{RUNTIME_DIR}/vpn/client.conf": (client_config.encode(), 0o600),
        f"{RUNTIME_DIR}/vpn/ca.crt": (ca_cert.encode(), 0o644),
        f"{RUNTIME_DIR}/vpn/client.crt": (client_cert.encode(), 0o644),
        f"{RUNTIME_DIR}/vpn/client.key": (client_key.encode(), 0o600),
        f"{RUNTIME_DIR}/vpn/tls-crypt.key": (tls_crypt_key.encode(), 0o600),
    }
    if condor_token is not None:
        files[f"{RUNTIME_DIR}/condor/token"] = (condor_token.encode(), 0o600)
    return files


def user_data(files: Mapping[str, tuple[bytes, int]]) -> str:
    """A ``#cloud-config`` user-data document that writes ``files`` (base64, exact modes)."""
    entries = []
    for path, (content, mode) in sorted(files.items()):
        if not path.startswith(RUNTIME_DIR + "/") or ".." in path.split("/"):
            raise ValueError(f"seed: {path} is not under {RUNTIME_DIR}")
        entries.append(
            {
                "path": path,
                "encoding": "b64",
                "content": base64.b64encode(content).decode(),
                "permissions": f"0{mode:o}",
            }
        )
    return "#cloud-config\n" + json.dumps({"write_files": entries}, indent=1) + "\n"


def meta_data(instance_id: str, hostname: str) -> str:
    """NoCloud meta-data: a fresh instance id per start makes cloud-init run again."""
    for field, value in (("instance_id", instance_id), ("hostname", hostname)):
        if not _INSTANCE_ID.match(value):
            raise ValueError(f"seed.{field}: {value!r} is not a valid {field}")
    return json.dumps({"instance-id": instance_id, "local-hostname": hostname}) + "\n"
