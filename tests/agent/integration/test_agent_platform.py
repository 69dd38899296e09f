"""Platform adapters: logind/utmp sessions, WTS (contract), DPAPI (contract), probes, psutil,
the NoCloud ISO read by real readers, and the coordinator client against the contract."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agent.agent_fakes import identity_files
from agent.agent_servers import CoordinatorServer

from cvmc import protocol
from cvmc.agent.adapters.hostprobe import LinuxProbe, WindowsProbe
from cvmc.agent.adapters.http_coordinator import AgentState, HttpCoordinator
from cvmc.agent.adapters.keystore import CRYPTPROTECT_UI_FORBIDDEN, DataBlob, DpapiKeyStore
from cvmc.agent.adapters.nocloud import IsoSeedFactory, build_iso
from cvmc.agent.adapters.resources import PsutilResources
from cvmc.agent.adapters.sessions_linux import UTMP_RECORD, LinuxSessions, parse_utmp
from cvmc.agent.adapters.sessions_windows import (
    WTS_SESSION_INFOW,
    WTSINFOEX_LEVEL1_W,
    WTSINFOEXW,
    WtsRecord,
    classify_wts,
    idle_seconds,
)
from cvmc.agent.domain.seed import seed_files
from cvmc.agent.ports import CoordinatorError, Session

# -- Linux sessions -----------------------------------------------------------------------


def logind(directory: Path, name: str, **fields: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(
        "# This is private data. Do not parse.\n" + "".join(f"{k}={v}\n" for k, v in fields.items())
    )


def test_logind_sessions_count_console_switched_ssh_and_rdp(tmp_path: Path) -> None:
    d = tmp_path / "sessions"
    logind(
        d,
        "1",
        UID="1000",
        USER="alice",
        ACTIVE="1",
        STATE="active",
        REMOTE="0",
        TYPE="wayland",
        CLASS="user",
        SERVICE="gdm-password",
        SEAT="seat0",
    )
    logind(
        d,
        "2",
        UID="1001",
        USER="bob",
        ACTIVE="0",
        STATE="online",
        REMOTE="0",
        TYPE="x11",
        CLASS="user",
        SERVICE="gdm-password",
        SEAT="seat0",
    )
    logind(
        d,
        "3",
        UID="1002",
        USER="carol",
        ACTIVE="1",
        STATE="active",
        REMOTE="1",
        TYPE="tty",
        CLASS="user",
        SERVICE="sshd",
    )
    logind(
        d,
        "4",
        UID="1003",
        USER="dan",
        STATE="online",
        REMOTE="1",
        CLASS="user",
        SERVICE="xrdp-sesman",
    )
    logind(d, "c1", UID="120", USER="gdm", STATE="online", CLASS="greeter", SERVICE="gdm")
    logind(d, "5", UID="1004", USER="erin", STATE="closing", CLASS="user")
    (d / "1.ref").write_text("")
    found = LinuxSessions(logind_dir=str(d)).sessions()
    assert found == [
        Session("alice", "console", "active"),
        Session("bob", "switched", "online"),
        Session("carol", "ssh", "active"),
        Session("dan", "rdp", "online"),
    ]


def utmp_record(kind: int, user: str, line: str, host: str = "") -> bytes:
    return UTMP_RECORD.pack(
        kind,
        4242,
        line.encode(),
        b"ts/0",
        user.encode(),
        host.encode(),
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        b"",
    )


def test_utmp_parsing_per_glibc_layout(tmp_path: Path) -> None:
    assert UTMP_RECORD.size == 384  # glibc x86-64 struct utmp
    data = (
        utmp_record(2, "reboot", "~")
        + utmp_record(7, "alice", "tty1")
        + utmp_record(7, "bob", "pts/0", "10.0.0.5")
        + utmp_record(8, "gone", "pts/1")
    )
    (tmp_path / "utmp").write_bytes(data)
    found = LinuxSessions(logind_dir=str(tmp_path / "none"), utmp=str(tmp_path / "utmp")).sessions()
    assert found == [Session("alice", "tty", "tty1"), Session("bob", "remote", "pts/0")]


def test_this_machines_own_sessions_parse() -> None:
    sessions = LinuxSessions().sessions()
    assert all(isinstance(s, Session) for s in sessions)
    if os.path.exists("/var/run/utmp"):
        with open("/var/run/utmp", "rb") as fh:
            parse_utmp(fh.read())  # the real file has the layout we parse


# -- Windows sessions (WTS), a contract test ------------------------------------------------


def test_wts_struct_matches_the_sdk_layout() -> None:
    pointer = ctypes.sizeof(ctypes.c_void_p)
    assert ctypes.sizeof(WTS_SESSION_INFOW) == (24 if pointer == 8 else 12)
    assert WTS_SESSION_INFOW.pWinStationName.offset == pointer


def test_wts_counts_rdp_and_fast_user_switching() -> None:
    recorded = [
        WtsRecord(0, "Services", 4, "", 0),  # session 0: services, no user
        WtsRecord(1, "Console", 0, "alice", 0),  # the owner at the console
        WtsRecord(2, "", 4, "bob", 0),  # switched away (fast user switching), still logged on
        WtsRecord(3, "RDP-Tcp#0", 0, "carol", 2),  # remote desktop
        WtsRecord(4, "RDP-Tcp#1", 4, "dan", 2),  # RDP window closed without logging off
        WtsRecord(65536, "RDP-Tcp", 6, "", 0),  # the listener
        WtsRecord(5, "Console", 1, "", 0),  # the logon screen: connected, no user
    ]
    assert classify_wts(recorded) == [
        Session("alice", "console", "active"),
        Session("bob", "switched", "disconnected"),
        Session("carol", "rdp", "active"),
        Session("dan", "rdp", "disconnected"),
    ]


def test_wtsinfoex_matches_the_sdk_layout() -> None:
    """wtsapi32.h: ULONG, WTS_CONNECTSTATE_CLASS and LONG, then WCHAR[33], WCHAR[21] and
    WCHAR[18] (WINSTATIONNAME_LENGTH, USERNAME_LENGTH and DOMAIN_LENGTH, plus NUL), five
    LARGE_INTEGERs on 8-byte boundaries, six DWORDs; WTSINFOEXW puts it after a DWORD Level,
    in a union aligned to 8. Offsets worked out by hand from that declaration."""
    level1 = WTSINFOEX_LEVEL1_W
    assert (level1.WinStationName.offset, level1.UserName.offset) == (12, 78)
    assert (level1.DomainName.offset, level1.LogonTime.offset) == (120, 160)
    assert (level1.LastInputTime.offset, level1.CurrentTime.offset) == (184, 192)
    assert (level1.IncomingBytes.offset, ctypes.sizeof(level1)) == (200, 224)
    assert (WTSINFOEXW.Data.offset, ctypes.sizeof(WTSINFOEXW)) == (8, 232)


def _info_ex(last: int, current: int, level: int = 1) -> bytes:
    info = WTSINFOEXW()
    info.Level = level
    info.Data.WTSInfoExLevel1.SessionId = 1
    info.Data.WTSInfoExLevel1.UserName[:5] = list("alice".encode("utf-16-le"))[::2]
    info.Data.WTSInfoExLevel1.LastInputTime = last
    info.Data.WTSInfoExLevel1.CurrentTime = current
    return bytes(info)


def test_wts_idle_time_is_current_minus_last_input_or_unknown() -> None:
    """``grid_policy.owner_idle_minutes`` on Windows: FILETIME ticks of 100 ns; whatever
    Windows does not say for sure is unknown (None), which counts the owner as present."""
    now = 134_000_000_000_000_000  # a FILETIME in 2025
    assert idle_seconds(_info_ex(now - 90 * 10**7, now)) == 90.0
    assert idle_seconds(_info_ex(0, now)) is None  # no last input time (the console, on some)
    assert idle_seconds(_info_ex(now + 10**7, now)) is None  # input after "now"
    assert idle_seconds(_info_ex(now - 400 * 86400 * 10**7, now)) is None  # over a year
    assert idle_seconds(_info_ex(now - 10**7, now, level=2)) is None  # another level
    assert idle_seconds(_info_ex(now - 10**7, now)[:200]) is None  # short
    assert idle_seconds(b"") is None
    records = [
        WtsRecord(1, "Console", 0, "alice", 0, idle_s=1800.0),
        WtsRecord(3, "RDP-Tcp#0", 0, "carol", 2, idle_s=None),
    ]
    assert classify_wts(records) == [
        Session("alice", "console", "active", idle_s=1800.0),
        Session("carol", "rdp", "active", idle_s=None),
    ]


@pytest.mark.live
@pytest.mark.skipif(sys.platform != "win32", reason="the WTS API exists only on Windows")
def test_live_wts_sessions() -> None:  # pragma: no cover - Windows only
    from cvmc.agent.adapters.sessions_windows import WindowsSessions  # noqa: PLC0415

    assert all(isinstance(s, Session) for s in WindowsSessions().sessions())
    idle = [s.idle_s for s in WindowsSessions(idle=True).sessions()]
    assert all(value is None or value >= 0 for value in idle)


# -- DPAPI, a contract test ------------------------------------------------------------------


class FakeCrypt32:
    """Stands in for crypt32.dll: checks the documented arguments and 'protects' by XOR."""

    def __init__(self) -> None:
        self.buffers: list[Any] = []
        self.calls: list[str] = []

    def _blob(self, ref: Any) -> DataBlob:
        blob = ctypes.cast(ref, ctypes.POINTER(DataBlob)).contents
        assert isinstance(blob, DataBlob)
        return blob

    def _out(self, ref: Any, data: bytes) -> int:
        buffer = ctypes.create_string_buffer(data, len(data))
        self.buffers.append(buffer)
        out = self._blob(ref)
        out.cbData = len(data)
        out.pbData = ctypes.cast(buffer, ctypes.POINTER(ctypes.c_char))
        return 1

    def CryptProtectData(  # noqa: N802, PLR0917 - the DLL function, as documented
        self,
        data_in: Any,
        description: Any,
        entropy: Any,
        reserved: Any,
        prompt: Any,
        flags: int,
        data_out: Any,
    ) -> int:
        assert flags == CRYPTPROTECT_UI_FORBIDDEN
        assert reserved is None
        assert prompt is None
        self.calls.append("protect")
        blob = self._blob(data_in)
        plain = ctypes.string_at(blob.pbData, blob.cbData)
        return self._out(data_out, b"DPAPI" + bytes(b ^ 0x5A for b in plain))

    def CryptUnprotectData(  # noqa: N802, PLR0917 - the DLL function, as documented
        self,
        data_in: Any,
        description: Any,
        entropy: Any,
        reserved: Any,
        prompt: Any,
        flags: int,
        data_out: Any,
    ) -> int:
        assert flags == CRYPTPROTECT_UI_FORBIDDEN
        self.calls.append("unprotect")
        blob = self._blob(data_in)
        sealed = ctypes.string_at(blob.pbData, blob.cbData)
        if not sealed.startswith(b"DPAPI"):
            return 0
        return self._out(data_out, bytes(b ^ 0x5A for b in sealed[5:]))


class FakeKernel32:
    def __init__(self) -> None:
        self.freed = 0

    def LocalFree(self, pointer: Any) -> None:  # noqa: N802
        self.freed += 1


def test_dpapi_keystore_contract(tmp_path: Path) -> None:
    crypt32, kernel32 = FakeCrypt32(), FakeKernel32()
    store = DpapiKeyStore(str(tmp_path / "store.dpapi"), crypt32, kernel32)
    key = store.master_key()
    assert len(key) == 32
    assert (tmp_path / "store.dpapi").read_bytes().startswith(b"DPAPI")
    assert key not in (tmp_path / "store.dpapi").read_bytes()
    again = DpapiKeyStore(str(tmp_path / "store.dpapi"), crypt32, kernel32)
    assert again.master_key() == key
    assert crypt32.calls == ["protect", "unprotect", "unprotect"]
    assert kernel32.freed == 3  # every output blob is handed back to LocalFree


@pytest.mark.live
@pytest.mark.skipif(sys.platform != "win32", reason="DPAPI exists only on Windows")
def test_live_dpapi_round_trip(tmp_path: Path) -> None:  # pragma: no cover - Windows only
    store = DpapiKeyStore(str(tmp_path / "store.dpapi"))
    assert store.unprotect(store.protect(b"secret")) == b"secret"


# -- probes and resources -------------------------------------------------------------------


def test_linux_probe(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text("processor : 0\nflags : fpu vme vmx sse\n")
    (tmp_path / "sys" / "module" / "kvm_intel").mkdir(parents=True)
    held = LinuxProbe("virtualbox", root=str(tmp_path)).hw_virt()
    assert (held.present, held.usable) == (True, False)
    assert "kvm_intel" in (held.held_by or "")
    (tmp_path / "proc" / "cpuinfo").write_text("flags : fpu sse\n")
    assert not LinuxProbe("qemu", root=str(tmp_path)).hw_virt().present
    real = LinuxProbe("qemu").hw_virt()  # this machine: whatever it is, it answers
    assert isinstance(real.present, bool)


def test_windows_probe_names_what_holds_vt_x() -> None:
    class Kernel32:
        def IsProcessorFeaturePresent(self, feature: int) -> int:  # noqa: N802
            assert feature == 21  # PF_VIRT_FIRMWARE_ENABLED
            return 1

    values = {
        ("DeviceGuard", "EnableVirtualizationBasedSecurity"): 1,
        ("HypervisorEnforcedCodeIntegrity", "Enabled"): 1,
    }

    def registry(key: str, value: str) -> Any:
        return values.get((key.rsplit("\\", 1)[-1], value))

    virt = WindowsProbe(Kernel32(), registry).hw_virt()
    assert virt.present
    assert not virt.usable
    assert virt.held_by == "VBS, memory integrity (HVCI)"
    values.clear()
    assert WindowsProbe(Kernel32(), registry).hw_virt().usable


def test_psutil_resources_on_this_machine() -> None:
    snap = PsutilResources().snapshot()
    assert snap.cpus >= 1
    assert 0 < snap.memory_free_mb <= snap.memory_total_mb
    assert PsutilResources().disk_free_mb("/") > 0


# -- the NoCloud seed, read by real readers --------------------------------------------------


@pytest.fixture
def seed_iso(tmp_path: Path) -> tuple[Path, bytes, bytes]:
    meta, user = seed_files(
        desktop="lab-pc01",
        slot=1,
        vm_name="its-u11-boinc-20120415",
        lease_id="l-7",
        identity=identity_files(1),
        condor_token=b"t" * 3000,
    )
    path = IsoSeedFactory(str(tmp_path / "seeds")).create(1, meta, user)
    return Path(path), meta, user


@pytest.mark.skipif(shutil.which("isoinfo") is None, reason="isoinfo (genisoimage) missing")
def test_isoinfo_reads_the_seed(seed_iso: tuple[Path, bytes, bytes]) -> None:
    path, meta, user = seed_iso
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    info = subprocess.run(
        ["isoinfo", "-d", "-i", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert "Volume id: cidata" in info
    assert "Joliet" in info
    listing = subprocess.run(
        ["isoinfo", "-J", "-l", "-i", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert "meta-data" in listing
    assert "user-data" in listing
    for name, content in (("meta-data", meta), ("user-data", user)):
        got = subprocess.run(
            ["isoinfo", "-J", "-x", f"/{name}", "-i", str(path)], capture_output=True, check=True
        ).stdout
        assert got == content


@pytest.mark.skipif(shutil.which("xorriso") is None, reason="xorriso missing")
def test_xorriso_reads_the_seed(seed_iso: tuple[Path, bytes, bytes], tmp_path: Path) -> None:
    path, _, user = seed_iso
    out = tmp_path / "extracted"
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(path), "-extract", "/user-data", str(out)],
        capture_output=True,
        check=True,
    )
    assert out.read_bytes() == user
    check = subprocess.run(
        ["xorriso", "-indev", str(path), "-check_media", "--"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "FAIL" not in check.stdout + check.stderr


@pytest.mark.skipif(shutil.which("blkid") is None, reason="blkid missing")
def test_blkid_sees_the_cidata_label(tmp_path: Path) -> None:
    path = tmp_path / "s.iso"
    path.write_bytes(build_iso({"meta-data": b"instance-id: x\n", "user-data": b"#cloud-config\n"}))
    out = subprocess.run(
        ["blkid", "-o", "export", str(path)], capture_output=True, text=True, check=False
    ).stdout
    assert "LABEL=cidata" in out
    assert "TYPE=iso9660" in out


def test_seeds_are_removed_per_slot_and_all_at_once(tmp_path: Path) -> None:
    seeds = IsoSeedFactory(str(tmp_path))
    seeds.create(0, b"m", b"u")
    seeds.create(1, b"m", b"u")
    seeds.remove(0)
    assert sorted(os.listdir(tmp_path)) == ["slot1.iso"]
    (tmp_path / "slot2.iso.tmp").write_bytes(b"half")
    assert len(seeds.remove_all()) == 2
    assert os.listdir(tmp_path) == []


# -- the coordinator client against the contract ----------------------------------------------


def test_enrol_sign_and_sequence_numbers(tmp_path: Path) -> None:
    server = CoordinatorServer(tmp_path)
    try:
        import ssl  # noqa: PLC0415

        context = ssl.create_default_context(cafile=server.cert)
        token = tmp_path / "token"
        token.write_text("one-time-token-0123456789")
        state = AgentState(str(tmp_path / "state"), bytes(32))

        def client() -> HttpCoordinator:
            return HttpCoordinator(
                server.url,
                state=state,
                desktop="lab-pc01",
                platform="linux",
                enrol_token_file=str(token),
                ssl_context=context,
            )

        reply = client().heartbeat({"hello": 1})
        assert reply["heartbeat_s"] == 5
        assert not token.exists()  # the one-time token is spent and deleted
        assert client().catalogue() == {"images": []}
        assert server.desktops["d-1"]["last_seq"] == 2
        # A restarted agent continues above the persisted sequence number.
        state2 = AgentState(str(tmp_path / "state"), bytes(32))
        assert state2.next_seq() == 3
        # A lost state file: the coordinator says what it saw last; the client jumps ahead.
        (tmp_path / "state" / "seq.json").write_text(json.dumps({"seq": 0}))
        state3 = AgentState(str(tmp_path / "state"), bytes(32))
        HttpCoordinator(
            server.url,
            state=state3,
            desktop="lab-pc01",
            platform="linux",
            enrol_token_file=None,
            ssl_context=context,
        ).heartbeat({})
        assert server.errors == ["replayed_sequence"]
        assert server.desktops["d-1"]["last_seq"] == 3
        # The credential on disk is encrypted.
        assert b"credential" not in (tmp_path / "state" / "credential.bin").read_bytes()
        # Another key cannot read it: that agent must enrol again, and has no token.
        stranger = AgentState(str(tmp_path / "state"), bytes([1]) * 32)
        with pytest.raises(CoordinatorError, match="no enrolment token") as info:
            HttpCoordinator(
                server.url,
                state=stranger,
                desktop="x",
                platform="linux",
                enrol_token_file=None,
                ssl_context=context,
            ).heartbeat({})
        assert info.value.code == "invalid_token"
        server.down = True
        with pytest.raises(CoordinatorError) as down:
            client().heartbeat({})
        assert down.value.code == "unavailable"
    finally:
        server.close()


def test_a_huge_last_seq_is_refused_and_an_out_of_range_sequence_recovers(tmp_path: Path) -> None:
    """Issue 15, finding 7: a 409 naming a ``last_seq`` above ``MAX_SEQ`` (or not an integer)
    is a protocol error, and the agent keeps its own sequence: following it would push its
    next number past what the coordinator accepts (19 digits), locking the desktop out for
    good. A stored sequence out of range starts again from 0 and the 409 puts it right."""
    import ssl  # noqa: PLC0415

    server = CoordinatorServer(tmp_path)
    try:
        token = tmp_path / "token"
        token.write_text("one-time-token-0123456789")
        seq_file = tmp_path / "state" / "seq.json"

        def client(token_file: str | None = None) -> HttpCoordinator:
            return HttpCoordinator(
                server.url,
                state=AgentState(str(tmp_path / "state"), bytes(32)),
                desktop="lab-pc01",
                platform="linux",
                enrol_token_file=token_file,
                ssl_context=ssl.create_default_context(cafile=server.cert),
            )

        client(str(token)).heartbeat({})
        assert server.desktops["d-1"]["last_seq"] == 1
        for claimed in (protocol.MAX_SEQ + 1, 2**70, 1e308, -1, True, "5"):
            server.claimed_last_seq = claimed
            seq_file.write_text(json.dumps({"seq": 0}))  # a lost state file: the next is a 409
            with pytest.raises(CoordinatorError, match="last_seq") as info:
                client().heartbeat({})
            assert info.value.code == "malformed", claimed
            assert json.loads(seq_file.read_text()) == {"seq": 1}, claimed
        # An honest coordinator again: the same agent recovers in one request.
        server.claimed_last_seq = None
        seq_file.write_text(json.dumps({"seq": 0}))
        client().heartbeat({})
        assert server.desktops["d-1"]["last_seq"] == 2
        # A stored sequence out of range (an older agent believed a huge last_seq): the agent
        # starts from 0, the coordinator's 409 names its last number, and the agent goes on.
        for stored in (protocol.MAX_SEQ, 10**19, -3, 2.5):
            seq_file.write_text(json.dumps({"seq": stored}))
            client().heartbeat({})
        assert server.desktops["d-1"]["last_seq"] == 6
        assert json.loads(seq_file.read_text()) == {"seq": 6}
        assert server.errors.count("malformed") == 0
    finally:
        server.close()


def test_a_coordinator_with_an_untrusted_certificate_is_refused(tmp_path: Path) -> None:
    server = CoordinatorServer(tmp_path)
    try:
        token = tmp_path / "token"
        token.write_text("one-time-token-0123456789")
        client = HttpCoordinator(
            server.url,
            state=AgentState(str(tmp_path / "s"), bytes(32)),
            desktop="d",
            platform="linux",
            enrol_token_file=str(token),
        )
        with pytest.raises(CoordinatorError, match="CERTIFICATE_VERIFY_FAILED"):
            client.heartbeat({})
        assert token.exists()
        assert server.desktops == {}
    finally:
        server.close()


def test_struct_sizes_used_by_parsers() -> None:
    assert struct.calcsize("<hxxi32s4s32s256shhiii4i20s") == 384
