"""The QEMU driver (Linux desktops): LUKS-encrypted qcow2 base, per-slot encrypted overlay,
``cache=none``, memory and cpus from the policy, graceful power-down over QMP.

Files under ``root`` (private to the service account)::

    bases/<sha256>.qcow2   the image, imported once: qcow2 with LUKS encryption, mode 0400
    bases/<sha256>.json    its virtual size
    vms/cvmc-slot<N>/      overlay.qcow2 (LUKS qcow2 on the base), qmp.sock, qemu.pid,
                           console.log
    disk.secret            the disk passphrase (hex, 0600), derived from the store's master key

The LUKS passphrase is a random 256-bit key, so PBKDF2 stretching adds nothing: the key slots
use ``encrypt.iter-time=100`` (ms) instead of the 2 s default, which would slow every start,
and SHA-512 for PBKDF2: QEMU times 32768 SHA-256 iterations with the thread's CPU clock, which
reads 0 ms about one time in four on a fast or tick-accounted CPU and fails the conversion
("Unable to get accurate CPU usage"); 32768 SHA-512 iterations failed 0 times in 260 here.
The base is imported with ``qemu-img convert`` reading the verified image from an in-memory
NBD export (``nbd``), so the plaintext never reaches the disk. VMs run with
``-blockdev ... cache.direct=on`` (``cache=none``), user-mode NAT networking, a seccomp
sandbox, in a session of their own; ``system_powerdown`` presses the ACPI power button, ``quit``
pulls the plug. With ``low_priority`` (``grid_vm_low_priority``, the default) QEMU starts at
nice 19 in the idle I/O class, and a type's ``cpu_cap_percent`` becomes the CFS bandwidth of
the VM's own cgroup (v2 or v1) where the agent's cgroup is writable, at the lowest weight
(``cvmc.agent.adapters.lowprio``); elsewhere
the cap is logged as not applied and the VM runs. QEMU has no per-NIC rate limit, so on QEMU
desktops the VM's bandwidth cap is the VPN gateway's per-tunnel cap (documented in
docs/agent.md).

Saving a VM (``grid_policy.suspend_minutes``): QMP ``stop``, then ``migrate`` to a pipe
whose write end QMP ``getfd`` received (the sandbox's ``spawn=deny`` rules out ``exec:``, and
QEMU 7.2 has no ``file:``). The agent reads the stream and writes it AES-256-GCM sealed
(``crypto.ChunkWriter``) with a fresh key that lives only in this process, to
``vms/<vm>/state.enc``; then QEMU quits. Resuming starts the same command line with
``-incoming defer``, hands QEMU a pipe's read end and ``migrate-incoming``, and feeds it the
decrypted state; the VM continues where it stopped and the state file is deleted. A restarted
agent cannot read a state (the key is gone): it removes it with the VM, as every leftover.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cvmc.agent.adapters.crypto import ChunkReader, ChunkWriter, CorruptError
from cvmc.agent.adapters.files import write_private
from cvmc.agent.adapters.lowprio import CgroupCap, lower_priority
from cvmc.agent.adapters.nbd import NbdServer
from cvmc.agent.adapters.process import Runner, run_command
from cvmc.agent.adapters.qmp import QmpError, QmpSession, qmp_command
from cvmc.agent.domain.slots import VM_PREFIX
from cvmc.agent.domain.suspend import state_limit_bytes
from cvmc.agent.ports import Hypervisor, HypervisorError, PlainSource, VmSpec

__all__ = ["SANDBOX", "QemuDriver", "probe_accel", "probe_kvm", "qcow2_virtual_size"]

_VERSION = re.compile(r"QEMU emulator version (\S+)")
_SHA = re.compile(r"\A[0-9a-f]{64}\Z")
_VM = re.compile(rf"\A{VM_PREFIX}\d+\Z")
LOG = logging.getLogger(__name__)


def qcow2_virtual_size(header: bytes) -> int:
    """The virtual disk size from a qcow2 header (magic ``QFI\\xfb``, size at offset 24)."""
    if len(header) < 32 or header[:4] != b"QFI\xfb":
        raise HypervisorError("the image is not a qcow2 file")
    return int(struct.unpack(">Q", header[24:32])[0])


#: QEMU's own seccomp sandbox, as every VM gets it (and the probes, so that they fail where a
#: service manager's system call filter would stop a VM).
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


#: The probe VM's boot sector (assembled from the source below; 84 bytes, then zeros and the
#: 0x55AA signature). SeaBIOS boots it from a 1 MiB raw disk; it switches to 32-bit protected
#: mode, returns through an ``iret``, and writes 0x31 to ``isa-debug-exit``, so QEMU exits with
#: status (0x31 << 1) | 1 = 99. A broken nested KVM (no unrestricted guest) fails exactly
#: there with "KVM internal error. Suberror: 1" and hangs, as it would in a research VM's
#: boot loader; a vCPU that merely keeps running proves nothing.
#:
#:     cli; xor ax,ax; mov ds,ax; lgdt [gdt_desc]; mov eax,cr0; or al,1; mov cr0,eax
#:     jmp 0x08:pm                                      ; 32-bit from here
#:     pm: mov ax,0x10; mov ds,ax; mov ss,ax; mov esp,0x7000
#:     pushfd; push 0x08; push after; iretd
#:     after: mov al,0x31; out 0xf4,al; hlt
#:     gdt: null, flat code 0x00CF9A000000FFFF, flat data 0x00CF92000000FFFF; gdt_desc: 23, gdt
_PROBE_CODE = bytes.fromhex(
    "fa31c08ed80f0116507c0f20c00c010f22c0ea177c080066b810008ed88ed0bc007000009c6a08682d7c0000"
    "cfb031e6f4f48db6000000000000000000000000ffff0000009acf00ffff00000092cf001700387c"
)
PROBE_DISK = _PROBE_CODE.ljust(510, b"\0") + b"\x55\xaa" + bytes(1024 * 1024 - 512)
#: QEMU's exit status when the probe's guest wrote 0x31 to isa-debug-exit.
PROBE_EXIT = 99


def probe_accel(qemu: str, accel: str, seconds: float = 15.0) -> bool:
    """Whether QEMU runs a guest here with ``accel`` (``kvm``: the CPU model VMs get,
    ``host``; ``tcg``: ``max``), under the seccomp sandbox VMs get: boot the probe's sector
    (:data:`PROBE_DISK`) and wait up to ``seconds`` for its exit status."""
    with tempfile.TemporaryDirectory(prefix="cvmc-probe-") as tmp:
        disk = os.path.join(tmp, "probe.img")
        with open(disk, "wb") as fh:
            fh.write(PROBE_DISK)
        argv = [
            qemu,
            "-accel",
            accel,
            "-cpu",
            "host" if accel == "kvm" else "max",
            "-machine",
            "q35",
            "-m",
            "64",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-sandbox",
            SANDBOX,
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-drive",
            f"file={disk},format=raw,if=virtio,readonly=on",
        ]
        errors = os.path.join(tmp, "stderr")
        try:
            with open(errors, "wb") as err:
                proc = subprocess.Popen(  # noqa: S603 - fixed argv
                    argv, stdout=subprocess.DEVNULL, stderr=err
                )
        except OSError:
            return False
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    return proc.returncode == PROBE_EXIT
                # KVM stops the vCPU and says so, but QEMU waits: no need to wait longer.
                with open(errors, "rb") as err:
                    if b"KVM internal error" in err.read(65536):
                        return False
                time.sleep(0.05)
            return False
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def probe_kvm(qemu: str = "qemu-system-x86_64", seconds: float = 15.0) -> bool:
    """Whether KVM really runs guests here, with the CPU model VMs get (``host``).

    A present but broken /dev/kvm (nested virtualisation gone wrong) may start a vCPU and
    still fail the first time the guest needs an instruction emulated, so the probe boots a
    guest through the mode switch every boot loader makes (:func:`probe_accel`). The agent
    (``accel`` ``auto``) and ``cvmc kvm-probe`` (the desktop roles) both ask here, as the user
    they run as."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    return probe_accel(qemu, "kvm", seconds)


#: How long a save or a resume may take before it is given up (a 32 GB VM at 200 MB/s
#: takes under three minutes).
SAVE_TIMEOUT_S = 600.0
_PIPE_READ = 1024 * 1024


#: qemu-img options that create a LUKS-encrypted qcow2 (see the module docstring).
_LUKS_CREATE = (
    "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=100,encrypt.hash-alg=sha512"
)


class QemuDriver(Hypervisor):
    name = "qemu"
    saves_state = True

    def __init__(
        self,
        root: str,
        *,
        disk_key: bytes,
        qemu: str = "qemu-system-x86_64",
        qemu_img: str = "qemu-img",
        accel: str = "auto",
        runner: Runner = run_command,
        low_priority: bool = True,
        cgroup: CgroupCap | None = None,
    ) -> None:
        self.root = Path(root)
        self.low_priority = low_priority
        self.cgroup = cgroup if cgroup is not None else CgroupCap()
        #: Per VM: None when its cpu cap is applied, else why not (absent: no cap asked).
        self.cap_status: dict[str, str | None] = {}
        self.qemu = qemu
        self.qemu_img = qemu_img
        self._accel_setting = accel
        self._accel: str | None = None if accel == "auto" else accel
        self._run = runner
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        #: The key of each saved VM's state: in memory only, never on disk.
        self._state_keys: dict[str, bytes] = {}
        for sub in ("bases", "vms"):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.secret = self.root / "disk.secret"
        encoded = disk_key.hex().encode()  # LUKS passphrases must be text
        if not self.secret.exists() or self.secret.read_bytes() != encoded:
            write_private(str(self.secret), encoded)

    def _img(self, argv: list[str], timeout: float) -> None:
        """Run qemu-img. QEMU 7.2 calibrates LUKS's PBKDF2 by timing 32768 iterations with
        millisecond thread-CPU resolution and fails ("Unable to get accurate CPU usage") when a
        fast CPU needs under 1 ms; that is a measurement fluke, so such a run is retried (rare
        with SHA-512, see the module docstring)."""
        for attempt in range(5):
            try:
                self._run(argv, timeout)
                return
            except HypervisorError as exc:
                if "Unable to get accurate CPU usage" not in str(exc) or attempt == 4:
                    raise

    # -- facts -----------------------------------------------------------------------------

    def version(self) -> str:
        out = self._run([self.qemu, "--version"], 30).stdout
        match = _VERSION.search(out)
        return match.group(1) if match else out.strip().splitlines()[0] if out.strip() else "?"

    def accel(self) -> str:
        """``kvm`` when /dev/kvm works (probed by running a tiny VM), else ``tcg``."""
        if self._accel is None:
            self._accel = "kvm" if self.probe_kvm() else "tcg"
        return self._accel

    def probe_kvm(self, seconds: float = 15.0) -> bool:
        """Whether KVM really runs guests here (:func:`probe_kvm` with this driver's QEMU)."""
        return probe_kvm(self.qemu, seconds)

    # -- bases ------------------------------------------------------------------------------

    def _base(self, sha256: str) -> Path:
        if not _SHA.match(sha256):
            raise HypervisorError(f"{sha256!r} is not an image digest")
        return self.root / "bases" / f"{sha256}.qcow2"

    def _secret_object(self) -> str:
        return f"secret,id=sec0,file={self.secret},format=raw"

    def has_base(self, sha256: str) -> bool:
        return self._base(sha256).exists() and self._base(sha256).with_suffix(".json").exists()

    def bases(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "bases").glob("*.qcow2"))

    def prepare_base(self, sha256: str, disk_format: str, source: PlainSource) -> None:
        if disk_format not in ("qcow2", "raw"):
            raise HypervisorError(f"QEMU imports qcow2 or raw images, not {disk_format}")
        base = self._base(sha256)
        size = source.size if disk_format == "raw" else qcow2_virtual_size(source.read_at(0, 32))
        tmp = base.with_suffix(".qcow2.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        with tempfile.TemporaryDirectory(prefix="cvmc-nbd-") as sockdir:
            sock = os.path.join(sockdir, "nbd.sock")
            with NbdServer(source, sock):
                self._img(
                    [
                        self.qemu_img,
                        "convert",
                        "-q",
                        "-f",
                        disk_format,
                        "-O",
                        "qcow2",
                        "--object",
                        self._secret_object(),
                        "-o",
                        _LUKS_CREATE,
                        f"nbd+unix:///?socket={sock}",
                        str(tmp),
                    ],
                    3600,
                )
        os.chmod(tmp, 0o400)
        base.with_suffix(".json").write_text(json.dumps({"virtual_size": size}))
        os.replace(tmp, base)

    def remove_base(self, sha256: str) -> None:
        base = self._base(sha256)
        for path in (base, base.with_suffix(".json")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # -- VMs ------------------------------------------------------------------------------

    def _dir(self, vm_id: str) -> Path:
        if not _VM.match(vm_id):
            raise HypervisorError(f"{vm_id!r} is not a cvmc VM name")
        return self.root / "vms" / vm_id

    def create(self, spec: VmSpec) -> None:
        base = self._base(spec.image_sha256)
        if not self.has_base(spec.image_sha256):
            raise HypervisorError(f"no base disk for {spec.image_sha256[:12]}")
        size = json.loads(base.with_suffix(".json").read_text())["virtual_size"]
        vm_dir = self._dir(spec.vm_id)
        if vm_dir.exists():
            raise HypervisorError(f"{spec.vm_id} already exists")
        vm_dir.mkdir(mode=0o700)
        self._img(
            [
                self.qemu_img,
                "create",
                "-q",
                "-f",
                "qcow2",
                "-u",
                "-b",
                str(base),
                "-F",
                "qcow2",
                "--object",
                self._secret_object(),
                "-o",
                _LUKS_CREATE,
                str(vm_dir / "overlay.qcow2"),
                str(size),
            ],
            120,
        )
        (vm_dir / "spec.json").write_text(json.dumps(spec.__dict__))

    def command_line(self, vm_id: str) -> list[str]:
        """The qemu argv for ``vm_id`` (created before)."""
        vm_dir = self._dir(vm_id)
        spec = json.loads((vm_dir / "spec.json").read_text())
        base = self._base(spec["image_sha256"])
        accel = self.accel()
        return [
            self.qemu,
            "-name", f"{vm_id},process={vm_id}",
            "-machine", f"q35,accel={accel}",
            "-cpu", "host" if accel == "kvm" else "max",
            "-m", str(int(spec["memory_mb"])),
            "-smp", str(int(spec["cpus"])),
            "-nodefaults", "-no-user-config", "-display", "none",
            "-sandbox", SANDBOX,
            "-object", self._secret_object(),
            "-blockdev", f"driver=file,node-name=base-file,filename={base},read-only=on,"
                         "cache.direct=on",
            "-blockdev", "driver=qcow2,node-name=base,file=base-file,read-only=on,"
                         "encrypt.format=luks,encrypt.key-secret=sec0",
            "-blockdev", f"driver=file,node-name=disk-file,filename={vm_dir / 'overlay.qcow2'},"
                         "cache.direct=on",
            "-blockdev", "driver=qcow2,node-name=disk,file=disk-file,backing=base,"
                         "encrypt.format=luks,encrypt.key-secret=sec0",
            "-device", "virtio-blk-pci,drive=disk,bootindex=1",
            "-blockdev", f"driver=file,node-name=seed-file,filename={spec['seed_iso']},"
                         "read-only=on",
            "-blockdev", "driver=raw,node-name=seed,file=seed-file,read-only=on",
            "-device", "virtio-blk-pci,drive=seed",
            "-netdev", "user,id=nat0",
            "-device", "virtio-net-pci,netdev=nat0",
            "-qmp", f"unix:{vm_dir / 'qmp.sock'},server=on,wait=off",
            "-chardev", f"file,id=console,path={vm_dir / 'console.log'},append=on",
            "-serial", "chardev:console",
            "-pidfile", str(vm_dir / "qemu.pid"),
        ]  # fmt: skip

    def start(self, vm_id: str) -> None:
        """Start QEMU in its own session (the seccomp sandbox refuses ``-daemonize``'s
        privilege handling) and return once QMP answers that the VM runs."""
        self._spawn(vm_id, [], "running")

    def _spawn(self, vm_id: str, extra: list[str], status: str) -> None:
        """Start QEMU with ``extra`` arguments; return once QMP reports ``status``."""
        vm_dir = self._dir(vm_id)
        with open(vm_dir / "qemu.log", "ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - argv built above, no shell
                self.command_line(vm_id) + extra,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=lower_priority if self.low_priority else None,  # noqa: PLW1509
            )
        self._procs[vm_id] = proc
        self._cap(vm_id, proc.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                detail = (vm_dir / "qemu.log").read_text(errors="replace").strip()
                raise HypervisorError(f"{vm_id}: QEMU exited ({proc.returncode}): {detail[-300:]}")
            with contextlib.suppress(QmpError):
                answer = qmp_command(str(vm_dir / "qmp.sock"), "query-status", timeout_s=2)
                if isinstance(answer, dict) and answer.get("status") == status:
                    return
            time.sleep(0.1)
        self.power_off(vm_id)
        raise HypervisorError(f"{vm_id}: QEMU did not come up within 60 s")

    def _cap(self, vm_id: str, pid: int) -> None:
        """Apply the type's ``cpu_cap_percent``, if any; a cap that cannot be set is logged."""
        spec = json.loads((self._dir(vm_id) / "spec.json").read_text())
        percent = spec.get("cpu_cap_percent")
        if percent is None:
            return
        why = self.cgroup.apply(vm_id, pid, int(percent), int(spec["cpus"]), low=self.low_priority)
        self.cap_status[vm_id] = why
        if why is not None:
            LOG.warning("%s: cpu_cap_percent=%s not applied, the VM runs uncapped: %s",
                        vm_id, percent, why)  # fmt: skip

    def _pid(self, vm_id: str) -> int | None:
        try:
            pid = int((self._dir(vm_id) / "qemu.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if vm_id.encode() in cmdline else None  # not a recycled pid

    def is_running(self, vm_id: str) -> bool:
        proc = self._procs.get(vm_id)
        if proc is not None:
            if proc.poll() is None:
                return True
            del self._procs[vm_id]  # reaped
            return False
        pid = self._pid(vm_id)
        if pid is None:
            return False
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z"

    def request_shutdown(self, vm_id: str) -> None:
        try:
            qmp_command(str(self._dir(vm_id) / "qmp.sock"), "system_powerdown")
        except QmpError as exc:
            raise HypervisorError(f"{vm_id}: system_powerdown: {exc}") from exc

    def power_off(self, vm_id: str) -> None:
        pid = self._pid(vm_id)
        if pid is None:
            return
        with contextlib.suppress(QmpError):
            qmp_command(str(self._dir(vm_id) / "qmp.sock"), "quit", timeout_s=2)
        for _ in range(50):
            if not self.is_running(vm_id):
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    # -- saved VMs (grid_policy.suspend_minutes) ---------------------------------------------

    def save(self, vm_id: str) -> int:
        vm_dir = self._dir(vm_id)
        spec = json.loads((vm_dir / "spec.json").read_text())
        state, tmp = vm_dir / "state.enc", vm_dir / "state.enc.tmp"
        key = os.urandom(32)
        writer = ChunkWriter.create(str(tmp), key, None)
        writer.limit = state_limit_bytes(int(spec["memory_mb"]))  # bounded, as the VM is not
        read_end, write_end = os.pipe()
        errors: list[BaseException] = []
        pump = threading.Thread(
            target=_seal_stream, args=(read_end, writer, errors), name=f"{vm_id}-save", daemon=True
        )
        pump.start()  # it owns read_end from here
        try:
            with QmpSession(str(vm_dir / "qmp.sock"), timeout_s=30) as qmp:
                qmp.command("stop")
                try:
                    qmp.command("getfd", {"fdname": "cvmc-save"}, fds=[write_end])
                    os.close(write_end)
                    write_end = -1
                    qmp.command("migrate", {"uri": "fd:cvmc-save"})
                    _wait_migration(qmp, vm_id, pump)
                except BaseException:
                    for name, args in (
                        ("migrate_cancel", None),
                        ("closefd", {"fdname": "cvmc-save"}),  # unused after a failed getfd
                        ("cont", None),  # the VM runs on; the agent vacates it
                    ):
                        with contextlib.suppress(QmpError):
                            qmp.command(name, args)
                    raise
            pump.join(SAVE_TIMEOUT_S)  # QEMU closed its end when the migration completed
            if pump.is_alive() or errors:
                raise HypervisorError(f"{vm_id}: the saved state was not written: {errors}")
        except (QmpError, OSError, ValueError) as exc:
            raise HypervisorError(f"{vm_id}: save: {exc}") from exc
        finally:
            if write_end >= 0:
                os.close(write_end)  # the pump sees EOF
            pump.join(5)
            if pump.is_alive() or errors or writer.total is None:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        size = writer.total
        assert size is not None  # finish() set it
        os.replace(tmp, state)
        self._state_keys[vm_id] = key
        self.power_off(vm_id)  # QEMU has nothing left to run: the state is its VM now
        return size

    def resume(self, vm_id: str) -> None:
        vm_dir = self._dir(vm_id)
        state = vm_dir / "state.enc"
        key = self._state_keys.get(vm_id)
        if key is None or not state.exists():
            raise HypervisorError(f"{vm_id}: no saved state this agent can read")
        try:
            reader = ChunkReader(str(state), key)
        except (OSError, CorruptError) as exc:
            raise HypervisorError(f"{vm_id}: the saved state: {exc}") from exc
        errors: list[BaseException] = []
        try:
            self._spawn(vm_id, ["-incoming", "defer"], "inmigrate")
            read_end, write_end = os.pipe()
            pump = threading.Thread(
                target=_feed_stream,
                args=(reader, write_end, errors),
                name=f"{vm_id}-resume",
                daemon=True,
            )
            pump.start()  # it owns write_end; a QEMU that stops reading ends it with EPIPE
            try:
                with QmpSession(str(vm_dir / "qmp.sock"), timeout_s=30) as qmp:
                    qmp.command("getfd", {"fdname": "cvmc-resume"}, fds=[read_end])
                    qmp.command("migrate-incoming", {"uri": "fd:cvmc-resume"})
                    status = _wait_loaded(qmp, vm_id, lambda: self.is_running(vm_id))
                    pump.join(SAVE_TIMEOUT_S)
                    if errors or pump.is_alive():
                        raise HypervisorError(f"{vm_id}: the saved state: {errors or 'stuck'}")
                    if status != "running":  # saved paused, so it loads paused
                        qmp.command("cont")
            finally:
                os.close(read_end)
        except (QmpError, OSError) as exc:
            self.power_off(vm_id)
            raise HypervisorError(f"{vm_id}: resume: {exc}") from exc
        except HypervisorError:
            self.power_off(vm_id)
            raise
        finally:
            reader.close()
        self._state_keys.pop(vm_id, None)
        state.unlink()

    def destroy(self, vm_id: str) -> None:
        vm_dir = self._dir(vm_id)
        self._state_keys.pop(vm_id, None)
        if self.is_running(vm_id):
            self.power_off(vm_id)
        shutil.rmtree(vm_dir, ignore_errors=True)
        self.cgroup.remove(vm_id)
        self.cap_status.pop(vm_id, None)
        if vm_dir.exists():
            raise HypervisorError(f"{vm_dir}: could not be removed")

    def list_vms(self) -> list[str]:
        return sorted(p.name for p in (self.root / "vms").iterdir() if _VM.match(p.name))


def _seal_stream(fd: int, writer: ChunkWriter, errors: list[BaseException]) -> None:
    """Read QEMU's migration stream from ``fd`` until EOF and seal it into ``writer``."""
    try:
        with os.fdopen(fd, "rb", buffering=0) as stream:
            while chunk := stream.read(_PIPE_READ):
                writer.write(chunk)
        writer.finish()
    except BaseException as exc:
        errors.append(exc)
        with contextlib.suppress(OSError, ValueError):
            writer.close()


def _feed_stream(reader: ChunkReader, fd: int, errors: list[BaseException]) -> None:
    """Write the decrypted state into ``fd`` for QEMU, then close it (EOF)."""
    try:
        with os.fdopen(fd, "wb", buffering=0) as stream:
            for chunk in reader.chunks():
                stream.write(chunk)
    except BaseException as exc:
        errors.append(exc)


def _wait_migration(qmp: QmpSession, vm_id: str, pump: threading.Thread) -> None:
    """Until the outgoing migration completed; HypervisorError if it failed or took too
    long."""
    deadline = time.monotonic() + SAVE_TIMEOUT_S
    while time.monotonic() < deadline:
        info = qmp.command("query-migrate")
        status = info.get("status") if isinstance(info, dict) else None
        if status == "completed":
            return
        if status in ("failed", "cancelled") or (status is not None and not pump.is_alive()):
            detail = info.get("error-desc", status) if isinstance(info, dict) else status
            raise HypervisorError(f"{vm_id}: migration {detail}")
        time.sleep(0.05)
    raise HypervisorError(f"{vm_id}: the save took more than {SAVE_TIMEOUT_S:.0f} s")


def _wait_loaded(qmp: QmpSession, vm_id: str, alive: Callable[[], bool]) -> str:
    """Until QEMU has loaded the incoming state; its run state then."""
    deadline = time.monotonic() + SAVE_TIMEOUT_S
    while time.monotonic() < deadline:
        if not alive():
            raise HypervisorError(f"{vm_id}: QEMU exited while loading the saved state")
        answer = qmp.command("query-status")
        status = answer.get("status") if isinstance(answer, dict) else None
        if status not in (None, "inmigrate"):
            return str(status)
        time.sleep(0.05)
    raise HypervisorError(f"{vm_id}: the resume took more than {SAVE_TIMEOUT_S:.0f} s")
