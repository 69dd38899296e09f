"""Lease → job → logon in the lab, with a cold and a warm image cache. Prints figures.

Runs `make lab-job`'s driver (scripts/lab_job.py) against the running lab (`make lab` first)
twice: once after emptying every lab desktop's image store (cold: the agent downloads the
signed image from the coordinator, checks it and imports it), then again with the image kept
(warm). Each run's figures come from the driver's figures file:

- submit → lease: the coordinator sees the demand and a desktop's agent holds the lease;
- lease → slot: the agent starts the VM under QEMU (KVM or TCG, stated), the VM dials the
  gateway and its startd joins the collector through CCB;
- submit → done: the seed, unnamed and probe jobs complete;
- logon → VM stopped, → slot gone from the collector, → the running job idle again;
- the agent's RSS and CPU while the VM runs.

Usage: python bench/lab_job.py [--warm-only]
Needs: `make lab` (the lab running) and `ansible-playbook playbooks/lab_job.yml` (the jobs).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache/desktop-grid"
MANIFEST = CACHE / "lab-job.json"
FIGURES = CACHE / "lab-job-figures.json"
ROWS = (
    ("submit_to_lease_s", "submit → lease held by an agent", "s"),
    ("lease_to_slot_s", "lease → VM's slot in the collector", "s"),
    ("submit_to_done_s", "submit → seed, unnamed and probe jobs done", "s"),
    ("logon_to_vm_stopped_s", "logon → VM stopped", "s"),
    ("logon_to_slot_gone_s", "logon → slot gone from the collector", "s"),
    ("logon_to_job_idle_s", "logon → running job idle again", "s"),
    ("agent_rss_mib", "agent RSS while the VM runs", "MiB"),
    ("agent_cpu_percent", "agent CPU over 20 s while the VM runs", "%"),
    ("qemu_rss_mib", "QEMU's RSS (the VM, 512 MB)", "MiB"),
    ("qemu_cpu_percent", "QEMU's CPU over the same 20 s", "%"),
)


def empty_image_stores(manifest: dict[str, object]) -> None:
    """Stop each desktop's agent, remove its stored images, start it again."""
    desktops = manifest["desktops"]
    assert isinstance(desktops, list)
    for desktop in desktops:
        for argv in (
            ["systemctl", "stop", str(manifest["agent_unit"])],
            ["sh", "-c", f"rm -rf {manifest['agent_images_dir']}/* {manifest['agent_vm_dir']}/*"],
            ["systemctl", "start", str(manifest["agent_unit"])],
        ):
            subprocess.run(["podman", "exec", str(desktop), *argv], check=True)


def run(label: str) -> dict[str, float]:
    FIGURES.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/lab_job.py")], check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bench: the {label} run of scripts/lab_job.py failed")
    figures: dict[str, float] = json.loads(FIGURES.read_text())
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--warm-only", action="store_true", help="keep the desktops' images")
    args = parser.parse_args()
    if not MANIFEST.is_file():
        raise SystemExit(f"bench: {MANIFEST} is missing: run `make lab` and `make lab-job` first")
    manifest = json.loads(MANIFEST.read_text())
    results: dict[str, dict[str, float]] = {}
    if not args.warm_only:
        empty_image_stores(manifest)
        results["cold"] = run("cold")
    results["warm"] = run("warm")
    accel = {k: "KVM" if v.get("accel_kvm") else "TCG" for k, v in results.items()}
    print(f"\n{'figure':52}" + "".join(f"{k + ' (' + accel[k] + ')':>16}" for k in results))
    for key, text, unit in ROWS:
        cells = "".join(
            f"{results[k][key]:>12.1f} {unit:<3}" if key in results[k] else f"{'-':>16}"
            for k in results
        )
        print(f"{text:52}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
