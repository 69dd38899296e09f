"""``cvmc``: the agent's command line.

    cvmc agent run            run the agent (as the service account)
    cvmc agent cleanup        power off and remove every VM and seed the agent's state lists
                              (after the service stopped: systemd's ExecStopPost=)
    cvmc status               what the running agent is doing (its status file)
    cvmc check                preflight: config, VT-x, hypervisor conflicts, RAM, disk, version
    cvmc config check [FILE]  parse a config file with the agent's own parser (roles' validate:)
    cvmc kvm-probe            does KVM (else TCG) run a vCPU here, as this user? (JSON; roles
                              pick the accel with it)
    cvmc inhibit-probe        may this user keep the desktop awake (logind's inhibitor, as the
                              agent holds it while VMs run)? (JSON)
    cvmc images list          installed images
    cvmc images verify        re-check every installed image's signature and digest
    cvmc images gc            evict to the budget
    cvmc image sign           (admins) sign an image: manifest + minisign signatures

Every command takes ``--config`` (default: $CVMC_CONFIG or /etc/cvmc/agent.json) and
``--log-format`` (``auto``: plain lines on a terminal, JSON otherwise). Exit codes: 0 fine,
1 a check or verification failed, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import hashlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from cvmc import __version__
from cvmc.agent import compose
from cvmc.agent.adapters import minisign
from cvmc.agent.adapters.inhibit import LogindInhibitor
from cvmc.agent.adapters.process import run_command
from cvmc.agent.adapters.qemu import probe_accel, probe_kvm
from cvmc.agent.domain.config import ConfigError
from cvmc.agent.domain.engine import evaluate
from cvmc.agent.entrypoints.progress import Progress
from cvmc.agent.logs import LOG_FORMATS, log_event, setup_logging
from cvmc.agent.ports import HypervisorError, ImageError
from cvmc.agent.service.agent import remove_leftovers
from cvmc.gridmodel.classad import validate_vm_name
from cvmc.gridmodel.policy import counts_as_present

LOG = logging.getLogger("cvmc.cli")


def _config_path(args: argparse.Namespace) -> str:
    return str(args.config or os.environ.get("CVMC_CONFIG") or compose.DEFAULT_CONFIG)


def cmd_agent_run(args: argparse.Namespace) -> int:
    config = compose.load_config(_config_path(args))
    setup_logging(path=config.agent.log_file, fmt=args.log_format)
    components = compose.build(config)
    agent = components.agent(args.desktop)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log_event(
        LOG,
        logging.INFO,
        "agent.start",
        f"cvmc {__version__} starts",
        hypervisor=config.agent.hypervisor,
        max_vms=config.policy.max_vms,
    )
    try:
        agent.run(stop)
    except Exception as exc:
        log_event(LOG, logging.CRITICAL, "agent.exit", f"{type(exc).__name__}: {exc}; exit 1")
        logging.shutdown()
        # Not sys.exit: a download or launch still on the executor would hold the interpreter
        # until it ended; the VMs are gone, and the service manager restarts the agent.
        os._exit(1)
    return 0


def cmd_agent_cleanup(args: argparse.Namespace) -> int:
    """Power off and remove every VM, slot disk and seed the agent's state lists (what a run
    that died left behind). Idempotent: exit 0 when nothing is left, 1 when a VM could not be
    removed. The Linux unit runs it as ``ExecStopPost=``; the agent itself runs it at start."""
    config = compose.load_config(_config_path(args))
    setup_logging(path=config.agent.log_file, fmt=args.log_format)
    components = compose.build(config)
    removed = remove_leftovers(components.hypervisor, components.seeds())
    left = components.hypervisor.list_vms()
    log_event(
        LOG,
        logging.ERROR if left else logging.INFO,
        "agent.cleanup",
        f"removed {len(removed)} item(s)" + (f"; still there: {', '.join(left)}" if left else ""),
        removed=removed,
    )
    return 1 if left else 0


def cmd_status(args: argparse.Namespace) -> int:
    config = compose.load_config(_config_path(args))
    path = os.path.join(config.agent.state_dir, "status.json")
    try:
        with open(path, encoding="utf-8") as fh:
            status = json.load(fh)
    except FileNotFoundError:
        print(f"no status yet ({path} is missing): is the agent running?")
        return 1
    if args.json:
        print(json.dumps(status, indent=1))
        return 0
    print(
        f"desktop {status['desktop']}  policy: {status['policy']}  "
        f"coordinator: {'ok' if status['coordinator_ok'] else 'unreachable'}  "
        f"(updated {status.get('updated', '?')})"
    )
    for slot in status["slots"]:
        what = (
            f"{slot['vm_name']} {slot['cpus']} cpu {slot['memory_mb']} MB"
            if slot["vm_name"]
            else ""
        )
        print(f"  slot {slot['slot']}: {slot['state']:<9} {what}  {slot['reason']}")
    return 0


def _check_rows(config_path: str) -> list[tuple[str, bool, str]]:
    rows: list[tuple[str, bool, str]] = []
    config = compose.load_config(config_path)
    rows.append(("config", True, f"{config_path} is valid"))
    components = compose.build(config)
    virt = components.probe.hw_virt()
    need = config.policy.require_hw_virtualization
    rows.append(
        (
            "hardware virtualisation",
            virt.usable or not need,
            f"{virt.detail}; "
            + (f"held by {virt.held_by}" if virt.held_by else "free")
            + ("" if need else " (not required by grid_policy)"),
        )
    )
    try:
        version = components.hypervisor.version()
        rows.append((f"hypervisor {components.hypervisor.name}", True, version))
    except HypervisorError as exc:
        rows.append((f"hypervisor {components.hypervisor.name}", False, str(exc)))
    res = components.resources.snapshot()
    smallest = min(t.memory_mb for t in config.vm_types.values())
    rows.append(
        (
            "memory",
            res.memory_total_mb >= smallest + config.policy.reserve_mb,
            f"{res.memory_total_mb} MB total, {res.memory_free_mb} MB free; the smallest "
            f"VM type needs {smallest} MB + {config.policy.reserve_mb} MB reserve",
        )
    )
    free = components.resources.disk_free_mb(config.agent.state_dir)
    rows.append(
        (
            "disk",
            free >= config.agent.image_budget_mb,
            f"{free} MB free for an image budget of {config.agent.image_budget_mb} MB",
        )
    )
    sessions = components.sessions.sessions()
    users = len(sessions)
    present = sum(counts_as_present(config.policy.windows, s.idle_s) for s in sessions)
    from cvmc.agent.domain.engine import HostState  # noqa: PLC0415 - only for the report

    verdict = evaluate(
        config.policy,
        dt.datetime.now(),
        HostState(
            users,
            res.cpus,
            res.memory_total_mb,
            res.memory_free_mb,
            virt,
            res.battery_percent,
            res.on_ac,
            present,
        ),
    )
    rows.append(
        ("policy now", True, f"{verdict.reason}; {users} user session(s), {present} present")
    )
    return rows


def cmd_check(args: argparse.Namespace) -> int:
    rows = _check_rows(_config_path(args))
    if args.json:
        print(json.dumps([{"check": n, "ok": ok, "detail": d} for n, ok, d in rows], indent=1))
    else:
        for name, ok, detail in rows:
            print(f"{'ok  ' if ok else 'FAIL'}  {name:<24} {detail}")
    return 0 if all(ok for _, ok, _ in rows) else 1


def cmd_config_check(args: argparse.Namespace) -> int:
    """Parse a configuration file with the agent's own parser and change nothing: the desktop
    roles' ``validate:`` (a bad key exits 2 through :func:`main`, naming the key)."""
    path = args.file or _config_path(args)
    config = compose.load_config(path)
    print(
        f"{path}: valid ({config.agent.hypervisor}, {len(config.vm_types)} VM type(s), "
        f"coordinator {config.coordinator_url})"
    )
    return 0


def cmd_kvm_probe(args: argparse.Namespace) -> int:
    """Whether KVM runs a guest for the user running this (the agent's own probe, which boots a
    tiny guest through a protected-mode switch with ``-accel kvm -cpu host`` under QEMU's
    seccomp sandbox), and whether TCG does;
    prints one JSON object. ``accel`` is what the agent will use: kvm, else tcg (the fallback).
    Exit 0 when a vCPU runs either way, 1 when QEMU runs none (or does not start)."""
    try:
        version = run_command([args.qemu, "--version"], 30).stdout.strip().splitlines()[0]
    except (HypervisorError, IndexError) as exc:
        print(json.dumps({"accel": None, "qemu": args.qemu, "error": str(exc) or "no output"}))
        return 1
    kvm = probe_kvm(args.qemu, args.seconds)
    tcg = probe_accel(args.qemu, "tcg", args.seconds)
    accel = "kvm" if kvm else "tcg" if tcg else None
    print(
        json.dumps(
            {
                "accel": accel,
                "kvm": kvm,
                "tcg": tcg,
                "qemu": args.qemu,
                "qemu_version": version,
                "dev_kvm": os.path.exists("/dev/kvm"),
                "dev_kvm_access": os.access("/dev/kvm", os.R_OK | os.W_OK),
                "uid": os.getuid() if hasattr(os, "getuid") else None,
            }
        )
    )
    return 0 if accel else 1


def cmd_inhibit_probe(args: argparse.Namespace) -> int:
    """Take the agent's own sleep inhibitor for this user, look for it in logind's list, and
    release it; prints one JSON object. Exit 0 when logind granted and listed it, 1 otherwise
    (no polkit, say: the agent then runs on, and the desktop may sleep under a VM)."""
    inhibitor = LogindInhibitor(who=args.who)
    held = inhibitor.hold("cvmc inhibit-probe")
    listed = False
    error = None
    try:
        if held:
            out = run_command(["systemd-inhibit", "--list", "--no-pager", "--no-legend"], 30)
            listed = any(
                args.who in line.split() and "block" in line.split()
                for line in out.stdout.splitlines()
            )
    except HypervisorError as exc:
        error = str(exc)
    finally:
        inhibitor.release()
    print(json.dumps({"held": held, "listed": listed, "who": args.who, "error": error}))
    return 0 if held and listed else 1


def cmd_images(args: argparse.Namespace) -> int:
    config = compose.load_config(_config_path(args))
    store = compose.build(config).store
    if args.action == "list":
        for image in store.installed():
            used = dt.datetime.fromtimestamp(image.last_used).isoformat(timespec="seconds")
            print(
                f"{image.vm_name:<32} {image.sha256[:16]}  {image.size >> 20:>6} MiB  "
                f"{image.disk_format:<5} last used {used}"
            )
        print(f"{store.used_bytes() >> 20} MiB of {store.budget >> 20} MiB budget")
        return 0
    if args.action == "verify":
        failed = 0
        for image in store.installed():
            try:
                store.verify(image.sha256)
                print(f"ok    {image.vm_name} {image.sha256[:16]}")
            except ImageError as exc:
                failed += 1
                print(f"FAIL  {image.vm_name} {image.sha256[:16]}: {exc}")
        return 1 if failed else 0
    removed = store.gc(set())
    print(f"removed {len(removed)}: {', '.join(r[:16] for r in removed) or 'nothing'}")
    return 0


def cmd_image_sign(args: argparse.Namespace) -> int:
    vm_name = validate_vm_name(args.vm_name, name="--vm-name")
    with open(args.key, encoding="utf-8") as fh:
        key_text = fh.read()
    if minisign.SecretKey.encrypted(key_text):
        if args.password_file:
            with open(args.password_file, "rb") as pf:
                password = pf.read().rstrip(b"\r\n")
        else:
            password = getpass.getpass(f"password for {args.key}: ").encode()
        key = minisign.SecretKey.load(key_text, password)
    else:
        key = minisign.SecretKey.load(key_text)
    digest = hashlib.sha256()
    size = 0
    total = os.path.getsize(args.image)
    for chunk in Progress("hashing", total).chunks(minisign.file_chunks(args.image)):
        digest.update(chunk)
        size += len(chunk)
    file_name = os.path.basename(args.image)
    manifest = (
        json.dumps(
            {
                "format_version": 1,
                "vm_name": vm_name,
                "file": file_name,
                "size": size,
                "sha256": digest.hexdigest(),
                "disk_format": args.format,
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
            sort_keys=True,
        ).encode()
        + b"\n"
    )
    out = args.out_dir or os.path.dirname(os.path.abspath(args.image))
    manifest_path = os.path.join(out, f"{file_name}.manifest.json")
    with open(manifest_path, "wb") as fh:
        fh.write(manifest)
    comment = f"cvmc manifest\tvm_name:{vm_name}\tsha256:{digest.hexdigest()}"
    with open(manifest_path + ".minisig", "w", encoding="utf-8") as fh:
        fh.write(minisign.sign(key, manifest, trusted_comment=comment))
    with open(os.path.join(out, f"{file_name}.minisig"), "w", encoding="utf-8") as fh:
        chunks = Progress("signing", total).chunks(minisign.file_chunks(args.image))
        fh.write(minisign.sign(key, chunks, file_name=file_name))
    print(
        f"signed {file_name} ({size} bytes, sha256 {digest.hexdigest()}) with key "
        f"{key.public.key_id_hex}:\n  {manifest_path}\n  {manifest_path}.minisig\n"
        f"  {os.path.join(out, file_name)}.minisig"
    )
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="cvmc", description="Condor VM Coordinator agent")
    top.add_argument("--version", action="version", version=f"cvmc {__version__}")
    top.add_argument(
        "--config", help=f"agent config (JSON); default $CVMC_CONFIG or {compose.DEFAULT_CONFIG}"
    )
    top.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="auto",
        help="standard error's log lines: auto (plain on a terminal, JSON otherwise), json, text",
    )
    sub = top.add_subparsers(dest="command", required=True)
    agent = sub.add_parser("agent", help="the agent service")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True)
    run = agent_sub.add_parser("run", help="run the agent until SIGTERM")
    run.add_argument("--desktop", help="desktop name (default: the host name)")
    run.set_defaults(func=cmd_agent_run)
    cleanup = agent_sub.add_parser(
        "cleanup", help="power off and remove every VM and seed a stopped agent left"
    )
    cleanup.set_defaults(func=cmd_agent_cleanup)
    status = sub.add_parser("status", help="what the agent is doing")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    check = sub.add_parser("check", help="preflight report")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_check)
    config = sub.add_parser("config", help="the configuration file")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    config_check = config_sub.add_parser("check", help="parse it with the agent's parser")
    config_check.add_argument("file", nargs="?", help="the file (default: --config's)")
    config_check.set_defaults(func=cmd_config_check)
    kvm = sub.add_parser("kvm-probe", help="does KVM run a vCPU here, as this user")
    kvm.add_argument("--qemu", default="qemu-system-x86_64", help="QEMU's system emulator")
    kvm.add_argument(
        "--seconds", type=float, default=15.0, help="how long the probe guest may take to boot"
    )
    kvm.set_defaults(func=cmd_kvm_probe)
    inhibit = sub.add_parser(
        "inhibit-probe", help="may this user keep the desktop awake while VMs run"
    )
    inhibit.add_argument("--who", default="cvmc", help="the name logind lists the lock under")
    inhibit.set_defaults(func=cmd_inhibit_probe)
    images = sub.add_parser("images", help="the image store")
    images.add_argument("action", choices=["list", "verify", "gc"])
    images.set_defaults(func=cmd_images)
    image = sub.add_parser("image", help="image tools for admins")
    image_sub = image.add_subparsers(dest="image_command", required=True)
    sign = image_sub.add_parser("sign", help="write a signed manifest and minisign signatures")
    sign.add_argument("--key", required=True, help="minisign secret key file")
    sign.add_argument("--password-file", help="its password (else asked on the terminal)")
    sign.add_argument("--image", required=True)
    sign.add_argument("--vm-name", required=True)
    sign.add_argument("--format", default="qcow2", choices=["qcow2", "vdi", "vmdk", "raw"])
    sign.add_argument("--out-dir")
    sign.set_defaults(func=cmd_image_sign)
    for p in (run, cleanup, status, check, config_check, kvm, images, sign):
        p.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        p.add_argument(
            "--log-format", choices=LOG_FORMATS, default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result: Any = args.func(args)
    except (ConfigError, ValueError, minisign.SignatureError) as exc:
        setup_logging(fmt=args.log_format)
        log_event(
            LOG,
            logging.ERROR,
            "config.invalid" if isinstance(exc, ConfigError) else "input.invalid",
            f"{exc}; nothing was changed",
        )
        return 2
    except OSError as exc:
        setup_logging(fmt=args.log_format)
        log_event(LOG, logging.ERROR, "io.error", str(exc))
        return 2
    return int(result)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
