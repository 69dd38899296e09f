"""Boot a built research VM image the way the desktop agent does, and read its serial console.

Shared by tests/integration/test_research_image.py and bench/image_build.py. The agent's own
pieces run: the image store (signature with the trusted key, digest, encrypted copy), the QEMU
driver (LUKS base and overlay, q35, SeaBIOS, virtio-blk with bootindex=1, user-mode NAT, KVM
when it really runs guests, else TCG) and the NoCloud seed factory, with a seed written by
``cvmc.gridmodel.seed``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.agent_servers import RangeServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cvmc.agent.adapters import minisign
from cvmc.agent.adapters.image_store import EncryptedImageStore
from cvmc.agent.adapters.nocloud import IsoSeedFactory
from cvmc.agent.adapters.qemu import QemuDriver
from cvmc.agent.ports import VmSpec
from cvmc.gridmodel import seed, vpn
from cvmc.protocol import CatalogueEntry

VM_ID = "cvmc-slot0"


def identity() -> dict[str, str]:
    """A real CA, client certificate and key, and tls-crypt key, made for one boot only."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "image-test-ca")])

    def cert(name: str, key: ec.EllipticCurvePrivateKey, ca: bool) -> str:
        made = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        return made.public_bytes(serialization.Encoding.PEM).decode()

    static = "\n".join(os.urandom(16).hex() for _ in range(16))
    return {
        "ca_cert": cert("image-test-ca", ca_key, True),
        "client_cert": cert("image-test-desktop-vm0", client_key, False),
        "client_key": client_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        "tls_crypt_key": "-----BEGIN OpenVPN Static key V1-----\n"
        f"{static}\n-----END OpenVPN Static key V1-----\n",
    }


def read_console(log: Path) -> str:
    """The serial console's text, without systemd's colour and cursor codes."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


@dataclass
class Boot:
    """A VM started from a published image; times in seconds since QEMU started."""

    driver: QemuDriver
    log: Path
    accel: str
    started: float
    marks: dict[str, float] = field(default_factory=dict)

    def wait_for(self, text: str, timeout: float) -> float:
        """Seconds since the start at which ``text`` was on the console."""
        while text not in read_console(self.log):
            if time.monotonic() - self.started > timeout:
                raise AssertionError(
                    f"no {text!r} on the console {timeout:.0f} s after the start:\n"
                    f"{read_console(self.log)[-4000:]}"
                )
            if not self.driver.is_running(VM_ID) and text not in read_console(self.log):
                raise AssertionError(
                    f"the VM stopped before {text!r} appeared:\n{read_console(self.log)[-4000:]}"
                )
            time.sleep(0.5)
        self.marks[text] = time.monotonic() - self.started
        return self.marks[text]

    def console(self) -> str:
        return read_console(self.log)

    def power_button(self, timeout: float) -> float:
        """Press the ACPI power button (the agent's vacate); seconds until QEMU exited."""
        pressed = time.monotonic()
        self.driver.request_shutdown(VM_ID)
        while self.driver.is_running(VM_ID):
            if time.monotonic() - pressed > timeout:
                raise AssertionError(f"the VM did not power off {timeout:.0f} s after the button")
            time.sleep(0.5)
        return time.monotonic() - pressed


def boot(
    images_dir: Path,
    image: str,
    vm_name: str,
    public_key: Path,
    work: Path,
    *,
    accel: str = "auto",
    memory_mb: int = 512,
    gateway_port: int = 1194,
) -> Boot:
    """Fetch ``image`` from ``images_dir`` (as the coordinator publishes it) through the agent's
    image store, import it, give it a fresh seed for slot 0 and start it."""
    server = RangeServer({image: str(images_dir / image)})
    try:
        store = EncryptedImageStore(
            str(work / "store"),
            key=os.urandom(32),
            trusted_keys=[minisign.parse_public_key(public_key.read_text())],
            budget_bytes=8 << 30,
            allow_insecure_http=True,  # the loopback RangeServer speaks plain http
        )
        published = CatalogueEntry(
            vm_name,
            f"{server.url}/{image}",
            (images_dir / f"{image}.manifest.json").read_bytes(),
            (images_dir / f"{image}.manifest.json.minisig").read_text(),
        )
        manifest = store.ensure(published, expect_vm_name=vm_name, expect_file=image)
    finally:
        server.close()
    driver = QemuDriver(str(work / "qemu"), disk_key=os.urandom(32), accel=accel)
    source = store.open(manifest.sha256)
    try:
        driver.prepare_base(manifest.sha256, manifest.disk_format, source)
    finally:
        source.close()
    # The seed the agent writes for slot 0: identity, tunnel config and HTCondor token. The
    # tunnel's gateway is this machine's loopback as QEMU's NAT sees it (10.0.2.2), on
    # ``gateway_port``: no packet leaves the machine.
    files = seed.identity_files(
        vm_name=vm_name,
        slot=0,
        client_config=vpn.client_config(
            remote="10.0.2.2", port=gateway_port, protocol="udp", cap_class="standard"
        ),
        condor_token="image-test-token",  # noqa: S106 - a made-up token no pool accepts
        **identity(),
    )
    iso = IsoSeedFactory(str(work / "seeds")).create(
        0,
        seed.meta_data(f"cvmc-image-test-{int(time.time())}", "image-test-vm0").encode(),
        seed.user_data(files).encode(),
    )
    driver.create(VmSpec(VM_ID, 0, vm_name, manifest.sha256, "qcow2", 1, memory_mb, 0, 0, iso, 1))
    started = time.monotonic()
    driver.start(VM_ID)
    return Boot(driver, work / "qemu" / "vms" / VM_ID / "console.log", driver.accel(), started)
