#!/usr/bin/python3
"""The grid gateway's tunnels as Prometheus metrics: a node_exporter textfile, rewritten by a timer.

grid-vpn-metrics.timer runs this every minute (issue 17, item 2). It reads, for every OpenVPN
instance of the VPN layout:

- the instance's status file (``status-version`` 2, commas, or 3, tabs; the distribution's
  openvpn-server@ unit and server.conf write version 2 to /run/openvpn-server/status-NAME.log):
  the connected common names, their tunnel addresses and byte counters;
- ``tc -s class show`` of the instance's tun device (towards the VMs, "down") and of its IFB
  twin (from the VMs, "up"): the packets each VM's cap class dropped. The cap hook
  (grid_vpn_cap.py) names a VM's class 1:<offset of its tunnel address in the slice, in hex>,
  so a class maps back to an address, and the status file maps that address to its identity;

and the VPN's CRL and server and CA certificates (their expiry). It writes the exposition to
``<textfile dir>/grid_vpn.prom`` atomically (a temporary file, then rename), so node_exporter's
textfile collector never reads half a file. No port is opened. Status files are bounded
(MAX_STATUS_BYTES, MAX_STATUS_LINES); a file over a bound, or unreadable, is reported as
grid_vpn_status_ok 0 for its instance and its clients are left out.

Configuration: /etc/openvpn/grid/metrics.json, written by the openvpn_gateway role:
``{"instances": [{"name", "network", "capacity", ...}], "vms_per_desktop", "status_dir", "crl",
"ca_cert", "server_cert", "textfile"}`` (instances: the VPN layout; an instance accepts capacity x
vms_per_desktop clients, its max-clients, and writes status_dir/status-NAME.log).
Standard library and python3-cryptography only.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CONFIG = "/etc/openvpn/grid/metrics.json"
TC = "/usr/sbin/tc"
#: A status file larger than this is not read (a /16 slice's 65,534 clients fit in ~20 MB).
MAX_STATUS_BYTES = 32 * 1024 * 1024
#: Two lines a client (CLIENT_LIST, ROUTING_TABLE) for a /16 slice, and the headers.
MAX_STATUS_LINES = 2 * 65536 + 64
#: tc's output for two devices of a /16 slice stays well under this.
MAX_TC_BYTES = 64 * 1024 * 1024
TC_TIMEOUT_S = 20.0
DEFAULT_MINOR = 1  # the hook's default (uncapped) class, 1:1
_CLASS = re.compile(r"^class htb 1:([0-9a-f]+) ")
_DROPPED = re.compile(r"^\s*Sent \d+ bytes \d+ pkt \(dropped (\d+),")


class StatusError(ValueError):
    """A status file that is not OpenVPN's version 2 or 3 format, or over a bound."""


@dataclass(frozen=True)
class Client:
    common_name: str
    virtual_address: str
    bytes_received: int
    bytes_sent: int


@dataclass(frozen=True)
class Status:
    updated: int  # TIME's time_t: when OpenVPN wrote the file
    clients: tuple[Client, ...]


def parse_status(text: str) -> Status:
    """OpenVPN's status file, version 2 (comma-separated) or 3 (tab-separated).

    Columns are found by name from the HEADER,CLIENT_LIST line, so OpenVPN versions that add
    columns (2.6 added Data Channel Cipher) read the same.
    """
    if len(text) > MAX_STATUS_BYTES:
        raise StatusError(f"the status file is over {MAX_STATUS_BYTES} bytes")
    lines = text.split("\n", MAX_STATUS_LINES)
    if len(lines) > MAX_STATUS_LINES:
        raise StatusError(f"the status file is over {MAX_STATUS_LINES} lines")
    first = lines[0]
    sep = "\t" if first.startswith("TITLE\t") else "," if first.startswith("TITLE,") else ""
    if not sep:
        raise StatusError("not a status-version 2 or 3 file (no TITLE line first)")
    columns: dict[str, int] = {}
    updated: int | None = None
    clients: list[Client] = []
    ended = False
    for line in lines[1:]:
        fields = line.rstrip("\r").split(sep)
        kind = fields[0]
        if kind == "TIME" and len(fields) >= 3:
            updated = _integer(fields[2], "TIME")
        elif kind == "HEADER" and fields[1:2] == ["CLIENT_LIST"]:
            columns = {name: i - 1 for i, name in enumerate(fields) if i >= 2}
        elif kind == "CLIENT_LIST":
            clients.append(_client(fields, columns))
        elif kind == "END":
            ended = True
            break
    if updated is None:
        raise StatusError("the status file has no TIME line")
    if not ended:
        raise StatusError("the status file has no END line (cut short)")
    return Status(updated=updated, clients=tuple(clients))


def _integer(value: str, what: str) -> int:
    if not value.isdigit() or len(value) > 20:
        raise StatusError(f"{what}: {value[:32]!r} is not a non-negative integer")
    return int(value)


def _client(fields: Sequence[str], columns: Mapping[str, int]) -> Client:
    needed = ("Common Name", "Virtual Address", "Bytes Received", "Bytes Sent")
    if any(name not in columns for name in needed):
        raise StatusError("CLIENT_LIST before a HEADER,CLIENT_LIST naming its columns")
    if len(fields) <= max(columns[name] for name in needed):
        raise StatusError(f"a CLIENT_LIST line has {len(fields)} fields")
    return Client(
        common_name=fields[columns["Common Name"]][:256],
        virtual_address=fields[columns["Virtual Address"]][:64],
        bytes_received=_integer(fields[columns["Bytes Received"]], "Bytes Received"),
        bytes_sent=_integer(fields[columns["Bytes Sent"]], "Bytes Sent"),
    )


def parse_tc_drops(text: str) -> dict[int, int]:
    """Dropped packets by HTB class minor (1:<minor>) from ``tc -s class show dev X``."""
    drops: dict[int, int] = {}
    minor: int | None = None
    for line in text.splitlines():
        head = _CLASS.match(line)
        if head:
            minor = int(head.group(1), 16)
            continue
        sent = _DROPPED.match(line)
        if sent and minor is not None:
            drops[minor] = int(sent.group(1))
            minor = None
    return drops


def class_address(minor: int, slice_cidr: str) -> str | None:
    """The tunnel address whose cap class is 1:<minor> (the hook's rule), or None."""
    net = ipaddress.IPv4Network(slice_cidr, strict=True)
    return _offset_address(int(net.network_address), net.num_addresses, minor)


def _offset_address(base: int, size: int, minor: int) -> str | None:
    """class_address without parsing the slice again (render calls it once per class)."""
    if minor < 2 or minor >= size - 1:
        return None
    return socket.inet_ntoa((base + minor).to_bytes(4, "big"))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in pairs.items()) + "}"


@dataclass(frozen=True)
class Instance:
    name: str
    network: str
    max_clients: int
    status: Status | None  # None: the status file could not be read
    drops: Mapping[str, Mapping[int, int]]  # direction -> class minor -> dropped packets


def render(instances: Iterable[Instance], expiries: Mapping[str, float | None], now: float) -> str:
    """The exposition (text format 0.0.4) of the instances and the PKI's expiry dates."""
    families: dict[str, tuple[str, str, list[str]]] = {}

    def add(name: str, kind: str, help_: str, labels: Mapping[str, str], value: float) -> None:
        family = families.setdefault(name, (kind, help_, []))
        family[2].append(f"{name}{_labels(labels) if labels else ''} {value:.17g}")

    for inst in instances:
        at = {"vpn_instance": inst.name}
        add(
            "grid_vpn_clients_capacity",
            "gauge",
            "Clients the instance accepts (max-clients: desktops x VMs per desktop).",
            at,
            inst.max_clients,
        )
        add(
            "grid_vpn_status_ok",
            "gauge",
            "1 if the instance's OpenVPN status file was read, else 0.",
            at,
            1 if inst.status else 0,
        )
        if inst.status is None:
            continue
        add(
            "grid_vpn_status_updated_timestamp_seconds",
            "gauge",
            "When OpenVPN last wrote the instance's status file.",
            at,
            inst.status.updated,
        )
        add(
            "grid_vpn_clients_connected",
            "gauge",
            "Research VMs connected to the instance.",
            at,
            len(inst.status.clients),
        )
        by_address = {c.virtual_address: c.common_name for c in inst.status.clients}
        net = ipaddress.IPv4Network(inst.network, strict=True)
        base, size = int(net.network_address), net.num_addresses
        for client in inst.status.clients:
            who = {**at, "identity": client.common_name}
            add(
                "grid_vpn_client_received_bytes_total",
                "counter",
                "Bytes the gateway received from the VM's tunnel (uploads), this connection.",
                who,
                client.bytes_received,
            )
            add(
                "grid_vpn_client_sent_bytes_total",
                "counter",
                "Bytes the gateway sent into the VM's tunnel (downloads), this connection.",
                who,
                client.bytes_sent,
            )
        for direction, drops in sorted(inst.drops.items()):
            for minor, dropped in sorted(drops.items()):
                address = _offset_address(base, size, minor)
                identity = by_address.get(address or "")
                if identity is None:
                    continue  # the default class, or a class whose client just left
                add(
                    "grid_vpn_cap_dropped_packets_total",
                    "counter",
                    "Packets the VM's bandwidth cap dropped (down: towards the VM; up: from it).",
                    {**at, "identity": identity, "direction": direction},
                    dropped,
                )
    for what, when in sorted(expiries.items()):
        if when is None:
            continue
        if what == "crl":
            add(
                "grid_vpn_crl_next_update_timestamp_seconds",
                "gauge",
                "The VPN CRL's next update; OpenVPN refuses every client after it.",
                {},
                when,
            )
        else:
            add(
                "grid_vpn_cert_not_after_timestamp_seconds",
                "gauge",
                "When the VPN's certificate expires (server: this gateway's; ca: the grid's CA).",
                {"cert": what},
                when,
            )
    add(
        "grid_vpn_metrics_timestamp_seconds",
        "gauge",
        "When grid-vpn-metrics wrote this file.",
        {},
        now,
    )
    lines: list[str] = []
    for name, (kind, help_, samples) in families.items():
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", *samples]
    return "\n".join(lines) + "\n"


def read_status(path: str) -> Status | None:
    """The status file at `path`, or None (with the reason on stderr) when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read(MAX_STATUS_BYTES + 1)
        return parse_status(text)
    except (OSError, StatusError) as exc:
        print(f"grid-vpn-metrics: {path}: {exc}", file=sys.stderr)
        return None


def read_drops(dev: str, tc: str = TC) -> dict[int, int]:
    """The cap classes' drops on `dev`; empty (reason on stderr) when tc cannot show them."""
    try:
        result = subprocess.run(
            [tc, "-s", "class", "show", "dev", dev],
            capture_output=True,
            check=False,
            timeout=TC_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"grid-vpn-metrics: tc on {dev}: {exc}", file=sys.stderr)
        return {}
    if result.returncode != 0:
        print(f"grid-vpn-metrics: tc on {dev}: {result.stderr[:200]!r}", file=sys.stderr)
        return {}
    return parse_tc_drops(result.stdout[:MAX_TC_BYTES].decode("utf-8", "replace"))


def _expiry(path: str, kind: str) -> float | None:
    from cryptography import x509  # noqa: PLC0415 - only the PKI part needs it

    try:
        with open(path, "rb") as handle:
            data = handle.read(1024 * 1024)
        if kind == "crl":
            crl = x509.load_pem_x509_crl(data)
            when = getattr(crl, "next_update_utc", None) or crl.next_update
        else:
            cert = x509.load_pem_x509_certificate(data)
            when = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after
    except (OSError, ValueError) as exc:
        print(f"grid-vpn-metrics: {path}: {exc}", file=sys.stderr)
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)  # noqa: UP017 - EL9's Python is 3.9
    return float(when.timestamp())


def collect(config: Mapping[str, Any], tc: str = TC) -> tuple[list[Instance], dict[str, Any]]:
    per_desktop = int(config["vms_per_desktop"])
    instances = [
        Instance(
            name=inst["name"],
            network=inst["network"],
            max_clients=int(inst["capacity"]) * per_desktop,
            status=read_status(os.path.join(config["status_dir"], f"status-{inst['name']}.log")),
            drops={
                "down": read_drops(f"tun-{inst['name']}", tc),
                "up": read_drops(f"ifb-{inst['name']}", tc),
            },
        )
        for inst in config["instances"]
    ]
    expiries = {
        "crl": _expiry(config["crl"], "crl"),
        "server": _expiry(config["server_cert"], "cert"),
        "ca": _expiry(config["ca_cert"], "cert"),
    }
    return instances, expiries


def write_atomic(path: str, text: str) -> None:
    """Write `path` (0644) through a temporary file in its directory and a rename."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".grid_vpn.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grid-vpn-metrics", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=CONFIG, help=f"(default {CONFIG})")
    parser.add_argument("--tc", default=TC, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as handle:
        config = json.load(handle)
    instances, expiries = collect(config, args.tc)
    now = datetime.datetime.now(tz=datetime.timezone.utc).timestamp()  # noqa: UP017
    write_atomic(config["textfile"], render(instances, expiries, now))
    return 0


if __name__ == "__main__":
    sys.exit(main())
