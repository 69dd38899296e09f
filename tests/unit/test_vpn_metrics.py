"""The gateway's tunnel exporter (roles/openvpn_gateway/files/grid_vpn_metrics.py, run by
grid-vpn-metrics.timer): status files written by a real OpenVPN server with a real client
connected (both versions), cases in the documented version 2 and 3 formats, HTB
drop counters from a real `tc` (in a network namespace of its own), the PKI's expiry from a
PKI made with `cryptography`; the textfile it writes is checked by the real `promtool check
metrics`. Issue 17, item 2."""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from unit.test_vpn_crl import NOW, Pki, _cert

SCRIPT = Path(__file__).parents[2] / "roles/openvpn_gateway/files/grid_vpn_metrics.py"

# What OpenVPN 2.6 writes with `status-version 2` (openvpn(8), --status-version; multi.c's
# multi_print_status): a HEADER line names each record's columns.
STATUS_V2 = """\
TITLE,OpenVPN 2.6.3 x86_64-pc-linux-gnu [SSL (OpenSSL)] [LZO] [LZ4] [EPOLL] [MH/PKTINFO] [AEAD]
TIME,2026-12-04 12:00:00,1796385600
HEADER,CLIENT_LIST,Common Name,Real Address,Virtual Address,Virtual IPv6 Address,Bytes Received,\
Bytes Sent,Connected Since,Connected Since (time_t),Username,Client ID,Peer ID,Data Channel Cipher
CLIENT_LIST,lab-desktop-1-vm0,192.0.2.10:41000,10.64.0.5,,123456,7890123,2026-12-04 11:00:00,\
1796382000,UNDEF,0,0,AES-256-GCM
CLIENT_LIST,lab-desktop-2-vm1,192.0.2.11:41001,10.64.0.9,,5,6,2026-12-04 11:30:00,1796383800,\
UNDEF,1,1,AES-256-GCM
HEADER,ROUTING_TABLE,Virtual Address,Common Name,Real Address,Last Ref,Last Ref (time_t)
ROUTING_TABLE,10.64.0.5,lab-desktop-1-vm0,192.0.2.10:41000,2026-12-04 11:59:58,1796385598
ROUTING_TABLE,10.64.0.9,lab-desktop-2-vm1,192.0.2.11:41001,2026-12-04 11:59:58,1796385598
GLOBAL_STATS,Max bcast/mcast queue length,0
GLOBAL_STATS,dco_enabled,0
END
"""


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grid_vpn_metrics", SCRIPT)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["grid_vpn_metrics"] = module
    spec.loader.exec_module(module)
    return module


metrics = _load()


def promtool() -> str:
    """promtool (Debian's `prometheus`, installed by scripts/test-deps.sh): a missing one fails."""
    path = shutil.which("promtool")
    assert path, "promtool is missing: run scripts/test-deps.sh (Debian package prometheus)"
    return path


def check_metrics(text: str) -> None:
    result = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def samples(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_version_2_and_3_read_the_same() -> None:
    v2 = metrics.parse_status(STATUS_V2)
    v3 = metrics.parse_status(STATUS_V2.replace(",", "\t"))
    assert v2 == v3
    assert v2.updated == 1796385600
    assert [(c.common_name, c.virtual_address, c.bytes_received, c.bytes_sent)
            for c in v2.clients] == [("lab-desktop-1-vm0", "10.64.0.5", 123456, 7890123),
                                     ("lab-desktop-2-vm1", "10.64.0.9", 5, 6)]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("OpenVPN CLIENT LIST\nUpdated,x\n", "TITLE"),  # status-version 1
        (STATUS_V2.replace("END\n", ""), "no END"),
        (STATUS_V2.replace("TIME,", "TIMEX,"), "no TIME"),
        (STATUS_V2.replace(",123456,", ",-1,"), "Bytes Received"),
        (STATUS_V2.replace("HEADER,CLIENT_LIST", "HEADER,OTHER"), "CLIENT_LIST before"),
        ("TITLE,x\n" + "GLOBAL_STATS,a,0\n" * (2 * 65536 + 64), "lines"),
        ("TITLE," + "x" * (32 * 1024 * 1024), "bytes"),
    ],
)
def test_bad_or_oversized_status_files_are_refused(text: str, message: str) -> None:
    with pytest.raises(metrics.StatusError, match=message):
        metrics.parse_status(text)


def test_exposition_passes_promtool_and_maps_cap_classes_to_identities() -> None:
    status = metrics.parse_status(STATUS_V2)
    # The hook's class of 10.64.0.5 in 10.64.0.0/22 is 1:5; 1:1 is the default class; 1:7 a
    # VM that has just left (not in the status file).
    inst = metrics.Instance(
        name="r0",
        network="10.64.0.0/22",
        max_clients=40,
        status=status,
        drops={"down": {1: 99, 5: 17, 7: 3}, "up": {5: 2}},
    )
    down = metrics.Instance("r1", "10.64.4.0/22", 40, None, {"down": {}, "up": {}})
    text = metrics.render([inst, down], {"crl": 1.8e9, "server": 1.9e9, "ca": None}, 1.7e9)
    check_metrics(text)
    got = samples(text)
    assert got['grid_vpn_clients_connected{vpn_instance="r0"}'] == 2
    assert got['grid_vpn_clients_capacity{vpn_instance="r0"}'] == 40
    assert got['grid_vpn_status_ok{vpn_instance="r1"}'] == 0
    assert 'grid_vpn_clients_connected{vpn_instance="r1"}' not in got
    who = 'vpn_instance="r0",identity="lab-desktop-1-vm0"'
    assert got[f"grid_vpn_client_received_bytes_total{{{who}}}"] == 123456
    assert got[f"grid_vpn_client_sent_bytes_total{{{who}}}"] == 7890123
    assert got[f'grid_vpn_cap_dropped_packets_total{{{who},direction="down"}}'] == 17
    assert got[f'grid_vpn_cap_dropped_packets_total{{{who},direction="up"}}'] == 2
    assert sum(1 for k in got if k.startswith("grid_vpn_cap_dropped")) == 2
    assert got["grid_vpn_crl_next_update_timestamp_seconds"] == 1.8e9
    assert got['grid_vpn_cert_not_after_timestamp_seconds{cert="server"}'] == 1.9e9


def test_label_values_are_escaped() -> None:
    odd = metrics.parse_status(STATUS_V2.replace("lab-desktop-2-vm1,", 'a"b\\c,'))
    inst = metrics.Instance("r0", "10.64.0.0/22", 4, odd, {"down": {}, "up": {}})
    text = metrics.render([inst], {}, 0.0)
    check_metrics(text)
    assert 'identity="a\\"b\\\\c"' in text


def test_class_addresses_follow_the_hook() -> None:
    cap = _load_cap()
    for address in ("10.64.0.2", "10.64.1.77", "10.64.3.254"):
        classid, _ = cap._handles(address, "10.64.0.0/22")
        assert metrics.class_address(int(classid.split(":")[1], 16), "10.64.0.0/22") == address
    assert metrics.class_address(1, "10.64.0.0/22") is None
    assert metrics.class_address(1023, "10.64.0.0/22") is None


def _load_cap() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "grid_vpn_cap", SCRIPT.with_name("grid_vpn_cap.py")
    )
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _netns_ok() -> bool:
    if shutil.which("unshare") is None or not Path("/usr/sbin/tc").exists():
        return False
    return (
        subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False).returncode == 0
    )


# Inside a new network namespace: the hook's tree on lo (a 1:1 default class and a tiny cap
# class 1:5 for 127.0.0.5 with a 2-packet queue), a burst of UDP to 127.0.0.5, then the
# exporter's own read_drops("lo") through the real tc.
_IN_NETNS = """
import json, socket, subprocess, sys
sys.path.insert(0, sys.argv[1])
import grid_vpn_metrics as m
tc = lambda *a: subprocess.run(["/usr/sbin/tc", *a], check=True, capture_output=True)
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "1")
tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:1", "htb", "rate", "10gbit",
   "quantum", "1600")
tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:5", "htb", "rate", "8kbit",
   "ceil", "8kbit", "quantum", "1600")
tc("qdisc", "add", "dev", "lo", "parent", "1:5", "pfifo", "limit", "2")
tc("filter", "add", "dev", "lo", "parent", "1:", "prio", "1", "protocol", "ip", "u32",
   "match", "ip", "dst", "127.0.0.5/32", "flowid", "1:5")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(50):
    s.sendto(b"x" * 1000, ("127.0.0.5", 9))
print(json.dumps(m.read_drops("lo")))
"""


@pytest.mark.skipif(not _netns_ok(), reason="no network namespace here (unshare -n needs root)")
def test_drops_of_a_real_htb_cap_class_are_read() -> None:
    result = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", _IN_NETNS, str(SCRIPT.parent)],
        capture_output=True, text=True, check=False, timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    drops = {int(k): v for k, v in json.loads(result.stdout).items()}
    assert drops[5] >= 40  # 50 packets into an 8 kbit/s class with a queue of 2
    assert drops.get(1, 0) == 0


def test_the_program_writes_a_valid_textfile_atomically(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    pki.write_crl(NOW, NOW + datetime.timedelta(days=180))
    run = tmp_path / "run"
    run.mkdir()
    (run / "status-r0.log").write_text(STATUS_V2)
    (run / "status-r1.log").write_text(STATUS_V2[:200])  # cut short: no END
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    config = {
        "instances": [
            {"name": "r0", "network": "10.64.0.0/22", "capacity": 20, "port": 1194},
            {"name": "r1", "network": "10.64.4.0/22", "capacity": 20, "port": 1195},
        ],
        "vms_per_desktop": 2,
        "status_dir": str(run),
        "crl": str(tmp_path / "crl.pem"),
        "ca_cert": str(tmp_path / "ca.crt"),
        "server_cert": str(tmp_path / "good.crt"),
        "textfile": str(textdir / "grid_vpn.prom"),
    }
    (tmp_path / "metrics.json").write_text(json.dumps(config))
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(tmp_path / "metrics.json")],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "status-r1.log: the status file has no END line" in result.stderr
    assert [p.name for p in textdir.iterdir()] == ["grid_vpn.prom"]  # no temporary file left
    assert (textdir / "grid_vpn.prom").stat().st_mode & 0o777 == 0o644
    text = (textdir / "grid_vpn.prom").read_text()
    check_metrics(text)
    got = samples(text)
    assert got['grid_vpn_clients_capacity{vpn_instance="r0"}'] == 40
    assert got['grid_vpn_clients_connected{vpn_instance="r0"}'] == 2
    assert got['grid_vpn_status_ok{vpn_instance="r1"}'] == 0
    assert (
        got["grid_vpn_crl_next_update_timestamp_seconds"]
        == (NOW + datetime.timedelta(days=180)).timestamp()
    )
    assert got['grid_vpn_cert_not_after_timestamp_seconds{cert="server"}'] == (
        pki.good.not_valid_after_utc.timestamp()
    )


# A real OpenVPN server and client on loopback, in a network namespace of their own: the
# server writes its status file every second; the client configures nothing on its side.
_OPENVPN_RUN = """
set -e
ip link set lo up
openvpn --dev tun-r0 --dev-type tun --topology subnet --server 10.64.0.0 255.255.252.0 \
  --proto udp --port 11940 --local 127.0.0.1 --ca ca.crt --cert server.crt --key server.key \
  --dh none --disable-dco --keepalive 10 60 --status status.log 1 --status-version "$1" \
  --verb 1 >server.out 2>&1 &
server=$!
openvpn --client --dev tun-c0 --dev-type tun --proto udp --remote 127.0.0.1 11940 \
  --connect-retry 1 --ca ca.crt --cert client.crt --key client.key --disable-dco \
  --ifconfig-noexec --route-noexec --nobind --verb 1 >client.out 2>&1 &
client=$!
for _ in $(seq 100); do
  grep -q '^CLIENT_LIST' status.log 2>/dev/null && break
  sleep 0.2
done
cp status.log seen.log
kill "$client" "$server"
wait || true
"""


def _openvpn_ok() -> bool:
    return Path("/usr/sbin/openvpn").exists() and Path("/dev/net/tun").exists() and _netns_ok()


@pytest.mark.skipif(not _openvpn_ok(), reason="needs openvpn, /dev/net/tun and unshare -n (root)")
@pytest.mark.parametrize("version", ["2", "3"])
def test_a_real_openvpn_status_file_is_read(tmp_path: Path, version: str) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("grid CA", ca_key, ca_key, "grid CA")
    (tmp_path / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for cn, name in (("gw1", "server"), ("lab-desktop-1-vm0", "client")):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(cn, key, ca_key, "grid CA")
        (tmp_path / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp_path / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    result = subprocess.run(
        ["unshare", "-n", "bash", "-c", _OPENVPN_RUN, "run", version],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    logs = "".join((tmp_path / f).read_text() for f in ("server.out", "client.out"))
    assert result.returncode == 0, result.stderr + logs
    text = (tmp_path / "seen.log").read_text()
    assert text.startswith("TITLE\t" if version == "3" else "TITLE,"), text
    status = metrics.parse_status(text)
    (client,) = status.clients
    assert (client.common_name, client.virtual_address) == ("lab-desktop-1-vm0", "10.64.0.2")
    assert client.bytes_received > 0
    assert client.bytes_sent > 0
    # The hook's class of the first pool address is 1:2; its drops land on the identity.
    inst = metrics.Instance("r0", "10.64.0.0/22", 2, status, {"down": {2: 4}, "up": {}})
    text = metrics.render([inst], {}, 0.0)
    check_metrics(text)
    assert (
        'grid_vpn_cap_dropped_packets_total{vpn_instance="r0",identity="lab-desktop-1-vm0",'
        'direction="down"} 4'
    ) in text
