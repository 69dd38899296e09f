#!/bin/bash
# What the host-side tests need on a fresh Debian 12, installed only when missing: openvpn
# (its real option parser checks the VM client config), and for the agent's integration
# tests QEMU and qemu-img (the real QEMU driver), minisign (signatures both ways), busybox-static,
# syslinux, mtools, dosfstools and cpio (the tiny test guest), genisoimage and xorriso (two
# independent ISO readers for the NoCloud seed); for the coordinator's tests Debian's PostgreSQL
# server (started here, with a test role and database) and chromium (the dashboard screenshot);
# prometheus for promtool (the alert rules, dashboard expressions and exporter output).
# Then it builds the tiny guest once (tests/agent/guest/build.sh; rebuilt only when that script
# changes). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(openvpn qemu-system-x86 qemu-utils minisign busybox-static syslinux syslinux-common mtools
  dosfstools cpio genisoimage xorriso postgresql chromium systemd prometheus)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# apt_get: apt-get as root (sudo otherwise) that waits for apt's locks (unattended-upgrades).
# shellcheck source=scripts/apt.sh
. scripts/apt.sh
if ((${#missing[@]})); then
  echo "test-deps: installing ${missing[*]}"
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Only promtool is wanted from prometheus: the server the package starts is stopped.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" systemctl disable --now prometheus.service prometheus-node-exporter.service \
      >/dev/null 2>&1 || true
  fi
fi
# The guest build fetches the kernel package with apt-get download, which needs package lists.
if ! apt-cache depends linux-image-amd64 2>/dev/null | grep -q 'Depends: linux-image-[0-9]'; then
  apt_get update -qq
fi
bash scripts/test-postgres.sh
bash tests/agent/guest/build.sh .cache/agent-guest
