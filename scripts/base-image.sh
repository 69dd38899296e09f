#!/usr/bin/env bash
# The recipe of the test hosts' base image: Debian 12 with systemd as PID 1.
# scripts/testhosts.sh tags the image with a hash of this file, so editing it (a package, a
# step) makes the next run rebuild the image; leaving it alone keeps the cached one.
#
# The test networks are `--internal`: containers reach no mirror. Every package a role installs
# in a test must therefore be baked in here; the role's package task then finds it present.
# Usage (called by testhosts.sh): base-image.sh ROOTFS_DIR MIRROR_URI
set -euo pipefail

GRID_BASE_SUITE=bookworm
# debootstrap's own --include: systemd as PID 1, and what Ansible needs on a managed host.
GRID_BASE_PACKAGES=(systemd systemd-sysv dbus python3 python3-apt sudo ca-certificates)
# Installed with apt inside the new root, which resolves dependencies fully.
GRID_EXTRA_PACKAGES=(
  # tools the verify steps use
  iproute2 iputils-ping procps less
  # openvpn_gateway and research_vm (tunnel side): OpenVPN, nftables, tc, the PKI module's
  # and the seed reader's Python libraries, and iperf3 for the cap measurements
  openvpn nftables python3-cryptography python3-yaml iperf3
  # grid_coordinator: nginx (TLS, image repository), a venv for the wheelhouse install, sqlite3
  # to check backups, acl for Ansible's become_user to the service account
  nginx python3-venv sqlite3 acl
)

rootfs=${1:?usage: base-image.sh ROOTFS_DIR MIRROR_URI}
mirror=${2:?usage: base-image.sh ROOTFS_DIR MIRROR_URI}

include=$(IFS=,; echo "${GRID_BASE_PACKAGES[*]}")
debootstrap --variant=minbase --include="$include" "$GRID_BASE_SUITE" "$rootfs" "$mirror"

# No service may start inside the chroot while packages install.
printf '#!/bin/sh\nexit 101\n' > "$rootfs/usr/sbin/policy-rc.d"
chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
chroot "$rootfs" apt-get update -qq
DEBIAN_FRONTEND=noninteractive chroot "$rootfs" \
  apt-get install -y -qq --no-install-recommends "${GRID_EXTRA_PACKAGES[@]}"
rm -f "$rootfs/usr/sbin/policy-rc.d"

# A container gets its machine-id from systemd at boot; an empty file keeps images identical.
: > "$rootfs/etc/machine-id"
# Units that only make sense on real hardware or a console.
for unit in getty.target systemd-udevd.service systemd-udev-trigger.service \
            systemd-remount-fs.service sys-kernel-debug.mount; do
  chroot "$rootfs" systemctl mask "$unit" >/dev/null 2>&1 || true
done
# Smaller image: downloaded .debs are not needed after install.
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/log/*.log "$rootfs"/tmp/* "$rootfs"/var/tmp/*
