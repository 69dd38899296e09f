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
GRID_BASE_PACKAGES=(
  # systemd as PID 1, and what Ansible needs on a managed host
  systemd systemd-sysv dbus python3 python3-apt sudo ca-certificates
  # tools the verify steps use
  iproute2 iputils-ping procps less
)

rootfs=${1:?usage: base-image.sh ROOTFS_DIR MIRROR_URI}
mirror=${2:?usage: base-image.sh ROOTFS_DIR MIRROR_URI}

include=$(IFS=,; echo "${GRID_BASE_PACKAGES[*]}")
debootstrap --variant=minbase --include="$include" "$GRID_BASE_SUITE" "$rootfs" "$mirror"

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
