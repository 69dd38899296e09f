#!/usr/bin/python3
"""OpenVPN hook of the grid gateway: a bandwidth cap per research VM, both directions.

OpenVPN runs it as `up` (once per instance: HTB trees on the tun device and its IFB twin),
`client-connect` (one HTB class and one u32 filter per direction for the client's fixed
tunnel address) and `client-disconnect` (removes them). Down (towards the VM) is shaped on
the tun device's egress; up (from the VM) is redirected to the instance's IFB device and
shaped on its egress. u32 filters sit in a 256-bucket hash table keyed on the address's last
octet, so a connect or disconnect touches one filter whatever the number of clients.

The cap class is the identity's, from the grid model: shaping.json maps each common name
whose class is not the default to its class (grid_desktop_classes). OpenVPN sets common_name
from the client certificate it verified, so a desktop cannot choose it. The class the VM
announces in peer info (UV_GRID_CLASS) is never used: a desktop's owner holds the slot's key
and could announce any class. A mismatch is only logged. If tc fails on connect, the script
exits non-zero and OpenVPN refuses the client: a VM is never connected without its cap.

OpenVPN drops root after start-up (user and group grid-vpn), so `up` runs as root and the
client events do not. For those, the script runs itself again through sudo, whose one rule
(/etc/sudoers.d/grid-vpn-cap, written by the role) lets the OpenVPN user run exactly this path
with --as-root. sudo clears the environment, so the client's values travel as arguments, each
checked against a strict pattern before use; the configuration path is then the fixed one.

Configuration: /etc/openvpn/grid/shaping.json, written by the openvpn_gateway role: the
instances (name, network) of the VPN layout, the cap classes, the default class, and the
identities' classes (identity_classes: common name -> class, the default class left out).
Standard library only.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

CONFIG = os.environ.get("GRID_VPN_SHAPING", "/etc/openvpn/grid/shaping.json")
TC = "/usr/sbin/tc"
IP = "/usr/sbin/ip"
HASH_TABLE = "2:"
DEFAULT_MINOR = 1  # offset 1 is the server address, never a client
QUANTUM = "1600"  # bytes; above the tunnel MTU, so HTB never warns about quantum
SUDO = "/usr/bin/sudo"
AS_ROOT = "--as-root"
#: The client events, which OpenVPN runs after dropping root.
CLIENT_EVENTS = ("client-connect", "client-disconnect")
#: What the privileged side accepts for each value OpenVPN gives about a client, in the order
#: the unprivileged side passes them. UV_GRID_CLASS is the VM's own claim, only ever logged.
CLIENT_ARGS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("script_type", re.compile(r"\Aclient-(connect|disconnect)\Z")),
    ("dev", re.compile(r"\Atun-[A-Za-z0-9_-]{1,32}\Z")),
    ("ifconfig_pool_remote_ip", re.compile(r"\A[0-9]{1,3}(\.[0-9]{1,3}){3}\Z")),
    ("common_name", re.compile(r"\A[a-z0-9][a-z0-9.-]{0,63}\Z")),
    ("UV_GRID_CLASS", re.compile(r"\A[A-Za-z0-9_?-]{0,32}\Z")),
)
_CLASS_CLAIM = re.compile(r"\A[A-Za-z0-9_-]{1,32}\Z")


def _instance(config: Mapping[str, Any], dev: str) -> dict[str, str]:
    """The instance whose tun device is `dev`: its devices (tun-NAME, ifb-NAME) and slice."""
    for inst in config["instances"]:
        if f"tun-{inst['name']}" == dev:
            return {"dev": dev, "ifb": f"ifb-{inst['name']}", "slice": inst["network"]}
    raise SystemExit(f"grid-vpn-cap: no instance uses device {dev!r} (see {CONFIG})")


def _tc(command: str) -> list[str]:
    """A tc argv from one line of words; every value here is free of spaces."""
    return [TC, *command.split()]


def _tree(dev: str, slice_cidr: str, match: str, at: int) -> list[list[str]]:
    """HTB root with a default class and a hash table of per-client u32 filters."""
    return [
        _tc(f"qdisc replace dev {dev} root handle 1: htb default {DEFAULT_MINOR:x}"),
        _tc(
            f"class replace dev {dev} parent 1: classid 1:{DEFAULT_MINOR:x} htb rate 10gbit "
            f"quantum {QUANTUM}"
        ),
        _tc(
            f"filter add dev {dev} parent 1: prio 1 handle {HASH_TABLE} protocol ip u32 divisor 256"
        ),
        _tc(
            f"filter add dev {dev} parent 1: prio 1 protocol ip u32 ht 800:: "
            f"match ip {match} {slice_cidr} hashkey mask 0x000000ff at {at} link {HASH_TABLE}"
        ),
    ]


def up_commands(inst: Mapping[str, Any]) -> list[list[str]]:
    dev, ifb, slice_cidr = inst["dev"], inst["ifb"], inst["slice"]
    return [
        _tc(f"qdisc del dev {dev} root"),
        _tc(f"qdisc del dev {dev} ingress"),
        _tc(f"qdisc del dev {ifb} root"),
        *_tree(dev, slice_cidr, "dst", 16),
        _tc(f"qdisc add dev {dev} handle ffff: ingress"),
        _tc(
            f"filter add dev {dev} parent ffff: prio 1 protocol ip u32 match u32 0 0 "
            f"action mirred egress redirect dev {ifb}"
        ),
        *_tree(ifb, slice_cidr, "src", 12),
    ]


def _handles(address: str, slice_cidr: str) -> tuple[str, str]:
    net = ipaddress.IPv4Network(slice_cidr, strict=True)
    addr = ipaddress.IPv4Address(address)
    if net.prefixlen < 16 or addr not in net:
        raise SystemExit(f"grid-vpn-cap: {address} is not in slice {slice_cidr} (at most /16)")
    offset = int(addr) - int(net.network_address)
    if offset < 2 or addr == net.broadcast_address:
        raise SystemExit(f"grid-vpn-cap: {address} is not a client address of {slice_cidr}")
    third, last = addr.packed[2], addr.packed[3]
    return f"1:{offset:x}", f"2:{last:x}:{third + 1:x}"


def _client_filter(verb: str, dev: str, handle: str) -> str:
    return f"filter {verb} dev {dev} parent 1: prio 1 handle {handle} protocol ip u32"


def connect_commands(
    inst: Mapping[str, Any], address: str, cap: Mapping[str, str]
) -> list[list[str]]:
    classid, handle = _handles(address, inst["slice"])
    bucket = handle.rsplit(":", 1)[0] + ":"
    commands = []
    for dev, match, rate in ((inst["dev"], "dst", cap["down"]), (inst["ifb"], "src", cap["up"])):
        commands += [
            _tc(
                f"class replace dev {dev} parent 1: classid {classid} htb "
                f"rate {rate} ceil {rate} quantum {QUANTUM}"
            ),
            _tc(
                f"{_client_filter('replace', dev, handle)} ht {bucket} "
                f"match ip {match} {address}/32 flowid {classid}"
            ),
        ]
    return commands


def disconnect_commands(inst: Mapping[str, Any], address: str) -> list[list[str]]:
    classid, handle = _handles(address, inst["slice"])
    commands = []
    for dev in (inst["dev"], inst["ifb"]):
        commands += [
            _tc(_client_filter("del", dev, handle)),
            _tc(f"class del dev {dev} classid {classid}"),
        ]
    return commands


def cap_for(config: Mapping[str, Any], common_name: str) -> tuple[str, Mapping[str, str]]:
    """The class of the identity the certificate proved: never one the client names."""
    classes = config["classes"]
    name = str(config.get("identity_classes", {}).get(common_name, config["default_class"]))
    if name not in classes:
        raise SystemExit(f"grid-vpn-cap: class {name!r} of {common_name!r} is not in {CONFIG}")
    return name, classes[name]


def _claim(env: Mapping[str, str], name: str) -> str:
    """A note when the VM announced another class; the announcement is bounded and quoted."""
    claimed = env.get("UV_GRID_CLASS")
    if claimed is None or claimed == name:
        return ""
    return f" (it announced {claimed[:32]!r}, ignored)"


def plan(env: Mapping[str, str], config: Mapping[str, Any]) -> tuple[list[list[str]], bool, str]:
    """The commands for this event, whether even deletions must succeed, and a log line."""
    event = env.get("script_type", "")
    inst = _instance(config, env.get("dev", ""))
    if event == "up":
        ifb_exists = os.path.exists(f"/sys/class/net/{inst['ifb']}")
        link = [] if ifb_exists else [[IP, "link", "add", inst["ifb"], "type", "ifb"]]
        commands = [*link, [IP, "link", "set", inst["ifb"], "up"], *up_commands(inst)]
        return commands, False, f"shaping ready on {inst['dev']} and {inst['ifb']}"
    address = env.get("ifconfig_pool_remote_ip", "")
    who = env.get("common_name", "?")
    if event == "client-connect":
        name, cap = cap_for(config, who)
        line = f"cap {who} {address}: class {name}, down {cap['down']}, up {cap['up']}"
        line += _claim(env, name)
        return connect_commands(inst, address, cap), True, line
    if event == "client-disconnect":
        return disconnect_commands(inst, address), False, f"cap removed for {who} {address}"
    raise SystemExit(f"grid-vpn-cap: unexpected script_type {event!r}")


def sudo_argv(env: Mapping[str, str], hook: str) -> list[str]:
    """The unprivileged side: this script again, as root, with the client's values as arguments.

    A class claim that is not a class name is passed as '?' (it is only logged anyway).
    """
    claimed = env.get("UV_GRID_CLASS", "")
    if claimed and not _CLASS_CLAIM.match(claimed):
        claimed = "?"
    values = [env.get(key, "") for key, _ in CLIENT_ARGS[:-1]]
    return [SUDO, "-n", hook, AS_ROOT, *values, claimed]


def env_from_args(args: Sequence[str]) -> dict[str, str]:
    """The privileged side: the client's values, each refused unless it matches its pattern."""
    if len(args) != len(CLIENT_ARGS):
        raise SystemExit(
            f"grid-vpn-cap: {AS_ROOT} takes {len(CLIENT_ARGS)} values, not {len(args)}"
        )
    env: dict[str, str] = {}
    # The length is checked above (zip's strict= needs Python 3.10; EL9 has 3.9).
    for (key, pattern), value in zip(CLIENT_ARGS, args):  # noqa: B905
        if not pattern.match(value):
            raise SystemExit(f"grid-vpn-cap: {key} {value[:64]!r} is not accepted")
        if value:
            env[key] = value
    return env


def main(args: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else list(args)
    if args[:1] == [AS_ROOT]:
        env: Mapping[str, str] = env_from_args(args[1:])
    else:
        env = os.environ
        if os.geteuid() != 0 and env.get("script_type") in CLIENT_EVENTS:
            hook = os.path.abspath(__file__)
            return subprocess.run(sudo_argv(env, hook), check=False).returncode
    with open(CONFIG, encoding="utf-8") as handle:
        config = json.load(handle)
    commands, strict, line = plan(env, config)
    for argv in commands:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        # Deleting what is not there (a first `up`, a second disconnect) is not an error;
        # anything else that fails stops here, and OpenVPN refuses the client or the instance.
        if result.returncode != 0 and not (argv[2] == "del" and not strict):
            print(f"grid-vpn-cap: {' '.join(argv)}: {result.stderr.strip()}", file=sys.stderr)
            return 1
    print(f"grid-vpn-cap: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
