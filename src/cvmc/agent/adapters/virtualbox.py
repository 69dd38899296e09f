"""The VirtualBox driver, through ``VBoxManage`` (Windows desktops, and Linux ones without KVM).

Per image, once: the verified image is written into the driver's private directory and
encrypted in place with ``VBoxManage encryptmedium`` (AES-XTS256-PLAIN64). The plaintext exists
only during that import, in the service account's private (on Windows EFS-encrypted)
profile; a marker file is written only after encryption succeeds, and an unmarked base is
deleted as half-done on the next start.

Per slot: ``createvm``, ``modifyvm`` (memory, cpus, ACPI, NAT, the type's
``--cpuexecutioncap`` and, with ``grid_vm_low_priority``, ``--vm-process-priority low``),
``storagectl --hostiocache off``, a differencing disk (``createmedium --diffparent``) that
inherits the base's encryption, the NoCloud seed as a DVD, a ``bandwidthctl`` network group
capped at the VM type's rate (``cvmc.gridmodel.bandwidth.vbox_limit``), ``startvm --type
headless`` and ``controlvm addencpassword``. Stop: ``controlvm acpipowerbutton``, then
``poweroff`` after the deadline. Remove: ``unregistervm --delete``.

VirtualBox limits only the traffic a VM *sends* on a bandwidth-group NIC, so the group gets
the type's ``up`` cap; the gateway enforces ``down``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

from cvmc.agent.adapters import vbox_parse
from cvmc.agent.adapters.files import write_private
from cvmc.agent.adapters.process import Runner, run_command
from cvmc.agent.domain.slots import VM_PREFIX
from cvmc.agent.ports import Hypervisor, HypervisorError, PlainSource, VmSpec
from cvmc.gridmodel.bandwidth import vbox_limit

__all__ = ["PASSWORD_ID", "VirtualBoxDriver"]

PASSWORD_ID = "cvmc"  # noqa: S105 - the password's name in VirtualBox, not a secret
CIPHER = "AES-XTS256-PLAIN64"
_SHA = re.compile(r"\A[0-9a-f]{64}\Z")
_VM = re.compile(rf"\A{VM_PREFIX}\d+\Z")
_FORMATS = {"vdi": "vdi", "vmdk": "vmdk", "raw": "img", "qcow2": "qcow2"}
_COPY = 4 * 1024 * 1024


class VirtualBoxDriver(Hypervisor):
    name = "virtualbox"

    def __init__(
        self,
        root: str,
        *,
        disk_key: bytes,
        vboxmanage: str = "VBoxManage",
        runner: Runner = run_command,
        low_priority: bool = True,
    ) -> None:
        self.root = Path(root)
        self.low_priority = low_priority
        self.vbm = vboxmanage
        self._run = runner
        self._version: tuple[int, int, int] | None = None
        for sub in ("bases", "vms"):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.password = self.root / "disk.password"
        secret = disk_key.hex().encode()
        if not self.password.exists() or self.password.read_bytes() != secret:
            write_private(str(self.password), secret)

    def _vbm(self, *args: str, timeout: float = 120.0) -> str:
        return self._run([self.vbm, *args], timeout).stdout

    def _attach(self, vm: str, port: int, *medium: str) -> None:
        """``storageattach`` on the SATA controller, device 0 of ``port``."""
        self._vbm(
            "storageattach",
            vm,
            "--storagectl",
            "SATA",
            "--port",
            str(port),
            "--device",
            "0",
            *medium,
        )

    # -- facts ---------------------------------------------------------------------------

    def version(self) -> str:
        return self._vbm("--version", timeout=30).strip()

    def version_tuple(self) -> tuple[int, int, int]:
        if self._version is None:
            try:
                self._version = vbox_parse.parse_version(self.version())
            except ValueError as exc:
                raise HypervisorError(str(exc)) from None
        return self._version

    # -- bases ---------------------------------------------------------------------------

    def _base(self, sha256: str, disk_format: str = "vdi") -> Path:
        if not _SHA.match(sha256):
            raise HypervisorError(f"{sha256!r} is not an image digest")
        return self.root / "bases" / f"{sha256}.{_FORMATS.get(disk_format, disk_format)}"

    def _marker(self, sha256: str) -> Path:
        return self.root / "bases" / f"{sha256}.json"

    def _base_of(self, sha256: str) -> Path:
        meta = json.loads(self._marker(sha256).read_text())
        return self._base(sha256, str(meta["disk_format"]))

    def has_base(self, sha256: str) -> bool:
        return self._marker(sha256).exists()

    def bases(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "bases").glob("*.json"))

    def prepare_base(self, sha256: str, disk_format: str, source: PlainSource) -> None:
        if disk_format not in ("vdi", "vmdk"):
            raise HypervisorError(f"VirtualBox imports vdi or vmdk images, not {disk_format}")
        base = self._base(sha256, disk_format)
        self._discard(base)
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            offset = 0
            while offset < source.size:
                data = source.read_at(offset, _COPY)
                fh.write(data)
                offset += len(data)
        try:
            self._vbm(
                "encryptmedium",
                str(base),
                "--newpassword",
                str(self.password),
                "--newpasswordid",
                PASSWORD_ID,
                "--cipher",
                CIPHER,
                timeout=3600,
            )
        except HypervisorError:
            self._discard(base)
            raise
        self._marker(sha256).write_text(json.dumps({"disk_format": disk_format}))

    def _discard(self, medium: Path) -> None:
        with contextlib.suppress(HypervisorError):
            self._vbm("closemedium", "disk", str(medium), "--delete")
        with contextlib.suppress(FileNotFoundError):
            medium.unlink()

    def remove_base(self, sha256: str) -> None:
        if self.has_base(sha256):
            self._discard(self._base_of(sha256))
        with contextlib.suppress(FileNotFoundError):
            self._marker(sha256).unlink()

    def remove_unfinished_bases(self) -> list[str]:
        """Bases whose import did not finish (no marker): plaintext, so delete them."""
        removed = []
        for path in (self.root / "bases").iterdir():
            if path.suffix != ".json" and not self._marker(path.name.split(".")[0]).exists():
                self._discard(path)
                removed.append(str(path))
        return removed

    # -- VMs -----------------------------------------------------------------------------

    def _check_vm(self, vm_id: str) -> str:
        if not _VM.match(vm_id):
            raise HypervisorError(f"{vm_id!r} is not a cvmc VM name")
        return vm_id

    def create(self, spec: VmSpec) -> None:
        vm = self._check_vm(spec.vm_id)
        if not self.has_base(spec.image_sha256):
            raise HypervisorError(f"no base disk for {spec.image_sha256[:12]}")
        base = self._base_of(spec.image_sha256)
        folder = self.root / "vms"
        disk = folder / vm / "slot.vdi"
        bandwidth_option = (
            "--nic-bandwidth-group1"
            if self.version_tuple() >= (7, 0, 0)
            else "--nicbandwidthgroup1"
        )
        self._vbm(
            "createvm",
            "--name",
            vm,
            "--basefolder",
            str(folder),
            "--ostype",
            "Linux_64",
            "--register",
        )
        try:
            self._vbm(
                "modifyvm",
                vm,
                "--memory",
                str(spec.memory_mb),
                "--cpus",
                str(spec.cpus),
                "--ioapic",
                "on",
                "--acpi",
                "on",
                "--nic1",
                "nat",
                "--description",
                f"cvmc slot {spec.slot}: {spec.vm_name}",
                *self._impact_options(spec),
            )
            self._vbm(
                "storagectl",
                vm,
                "--name",
                "SATA",
                "--add",
                "sata",
                "--controller",
                "IntelAhci",
                "--portcount",
                "2",
                "--hostiocache",
                "off",
            )
            self._vbm(
                "createmedium",
                "disk",
                "--filename",
                str(disk),
                "--diffparent",
                str(base),
                "--format",
                "VDI",
            )
            self._attach(vm, 0, "--type", "hdd", "--medium", str(disk))
            self._attach(vm, 1, "--type", "dvddrive", "--medium", spec.seed_iso)
            self._vbm(
                "bandwidthctl",
                vm,
                "add",
                "cvmc-net",
                "--type",
                "network",
                "--limit",
                vbox_limit(spec.up_bits, name=f"{spec.vm_name} up cap"),
            )
            self._vbm("modifyvm", vm, bandwidth_option, "cvmc-net")
        except (HypervisorError, ValueError):
            self.destroy(vm)
            raise

    def _impact_options(self, spec: VmSpec) -> list[str]:
        """The type's CPU execution cap (percent of each virtual CPU, 1-100) and, with
        ``low_priority``, the VM process's low priority (VirtualBox 7.0 and later; 6.1 has no
        such option, the cap still applies)."""
        options: list[str] = []
        if spec.cpu_cap_percent is not None:
            options += ["--cpuexecutioncap", str(int(spec.cpu_cap_percent))]
        if self.low_priority and self.version_tuple() >= (7, 0, 0):
            options += ["--vm-process-priority", "low"]
        return options

    def start(self, vm_id: str) -> None:
        vm = self._check_vm(vm_id)
        self._vbm("startvm", vm, "--type", "headless")
        self._vbm(
            "controlvm",
            vm,
            "addencpassword",
            PASSWORD_ID,
            str(self.password),
            "--removeonsuspend",
            "no",
        )

    def info(self, vm_id: str) -> dict[str, str] | None:
        """``showvminfo --machinereadable``, or None for an unknown VM."""
        if self._check_vm(vm_id) not in self.list_vms():
            return None
        return vbox_parse.parse_machinereadable(self._vbm("showvminfo", vm_id, "--machinereadable"))

    def is_running(self, vm_id: str) -> bool:
        return self._check_vm(vm_id) in vbox_parse.parse_list(self._vbm("list", "runningvms"))

    def request_shutdown(self, vm_id: str) -> None:
        self._vbm("controlvm", self._check_vm(vm_id), "acpipowerbutton")

    def power_off(self, vm_id: str) -> None:
        if self.is_running(vm_id):
            self._vbm("controlvm", vm_id, "poweroff")

    def destroy(self, vm_id: str) -> None:
        vm = self._check_vm(vm_id)
        if vm not in self.list_vms():
            return
        info = self.info(vm) or {}
        if vbox_parse.vm_state(info) in vbox_parse.RUNNING_STATES:
            self._vbm("controlvm", vm, "poweroff")
        with contextlib.suppress(HypervisorError):  # detach the seed so --delete spares it
            self._attach(vm, 1, "--medium", "none")
        self._vbm("unregistervm", vm, "--delete")

    def list_vms(self) -> list[str]:
        names = vbox_parse.parse_list(self._vbm("list", "vms"))
        return sorted(name for name in names if _VM.match(name))
