#!/usr/bin/env bash
# The recipe of a test host base image (Debian 12 or 13, systemd as PID 1) and of the local apt
# repository its containers install from. scripts/testhosts.sh tags both with a hash of this
# file and of the suite's lock file (scripts/apt-repo/<suite>.lock), so editing either rebuilds
# both; leaving them alone keeps the cached ones.
#
# The test networks are `--internal`: containers reach no mirror, as on an air-gapped campus.
# The image therefore holds only what systemd, Ansible and the verify steps need. Everything a
# role installs (HTCondor, OpenVPN, nginx, ...) comes from the local repository, which the host
# builds here from Debian's archive: the dependency closure of GRID_REPO_PACKAGES that the image
# lacks, exactly the versions in the lock file, signed by a key made for this build. The image
# trusts that key and lists the repository at file:/srv/desktop-grid-apt, which every container
# mounts read-only (testhosts.sh prints where it is). The roles' own install tasks run for real.
#
# Usage (called by testhosts.sh): base-image.sh SUITE ROOTFS_DIR REPO_DIR MIRROR_URI
# Environment: GRID_APT_REPO_UPDATE_LOCK=1 rewrites the lock file from what the archive has now.
set -euo pipefail

suite=${1:?usage: base-image.sh SUITE ROOTFS_DIR REPO_DIR MIRROR_URI}
rootfs=${2:?usage: base-image.sh SUITE ROOTFS_DIR REPO_DIR MIRROR_URI}
repo=${3:?usage: base-image.sh SUITE ROOTFS_DIR REPO_DIR MIRROR_URI}
mirror=${4:?usage: base-image.sh SUITE ROOTFS_DIR REPO_DIR MIRROR_URI}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lock="$here/apt-repo/$suite.lock"
# Where containers see the repository (a read-only mount), and the image's source entry for it.
GRID_REPO_MOUNT=/srv/desktop-grid-apt
GRID_REPO_KEYRING=/etc/apt/keyrings/desktop-grid-local.gpg
APT=(apt-get -o DPkg::Lock::Timeout=600 -o APT::Install-Recommends=false)

# debootstrap's own --include: systemd as PID 1, and what Ansible needs on a managed host.
GRID_BASE_PACKAGES=(systemd systemd-sysv dbus python3 python3-apt sudo ca-certificates)
# The tools the playbooks and verify steps use on every host (ip, ping, ps), and iperf3, which
# the VPN scenario and bench measure caps with. Nothing here is a service a role configures.
GRID_EXTRA_PACKAGES=(iproute2 iputils-ping procps less iperf3)
# What the roles install, by role (their own package tasks install these from the repository):
GRID_REPO_PACKAGES=(
  # openvpn_gateway and research_vm (tunnel side): OpenVPN, nftables, the PKI module's and the
  # seed reader's Python libraries
  openvpn nftables python3-cryptography python3-yaml
  # grid_coordinator: nginx (TLS, image repository), a venv for the wheelhouse install, sqlite3
  # for the backups, acl for Ansible's become_user to the service account
  nginx python3-venv sqlite3 acl
  # linux_desktop: QEMU from the distribution (the agent's hypervisor) and qemu-img, and
  # pam_systemd, without which logind never learns of an owner's logon (a desktop has it), and
  # polkitd, which logind asks before it grants the agent's sleep inhibitor
  qemu-system-x86 qemu-utils libpam-systemd polkitd
)
case $suite in
  # htcondor (install source "distribution"): Debian 13 ships HTCondor as the package condor.
  # playbooks/build_image.yml: the research VM image's kernel and initramfs (Debian 13).
  trixie) GRID_REPO_PACKAGES+=(condor linux-image-amd64 initramfs-tools) ;;
  # molecule coordinator_ha: the PostgreSQL server a campus provides for several coordinator
  # hosts (no role installs it; the scenario's database host does, as a site's DBA would), and
  # grid_coordinator's pg_dump for the backups of a PostgreSQL database. research_cache: squid
  # (molecule vpn's cache host).
  bookworm) GRID_REPO_PACKAGES+=(postgresql postgresql-client squid) ;;
  *) echo "base-image: unknown suite '$suite' (bookworm or trixie)" >&2; exit 2 ;;
esac

include=$(IFS=,; echo "${GRID_BASE_PACKAGES[*]}")
debootstrap --variant=minbase --include="$include" "$suite" "$rootfs" "$mirror"

# No service may start inside the chroot while packages install.
printf '#!/bin/sh\nexit 101\n' > "$rootfs/usr/sbin/policy-rc.d"
chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
chroot "$rootfs" "${APT[@]}" update -qq
DEBIAN_FRONTEND=noninteractive chroot "$rootfs" "${APT[@]}" install -y -qq "${GRID_EXTRA_PACKAGES[@]}"

# --- the local repository: what the roles install and the image lacks, from this archive ------
# apt resolves the closure against this very root, so the repository fits the image exactly.
mkdir -p "$rootfs/var/tmp/grid-repo/partial"
DEBIAN_FRONTEND=noninteractive chroot "$rootfs" "${APT[@]}" install -y -qq --download-only \
  -o Dir::Cache::Archives=/var/tmp/grid-repo "${GRID_REPO_PACKAGES[@]}"
mkdir -p "$repo/pool"
mv "$rootfs"/var/tmp/grid-repo/*.deb "$repo/pool/"
rm -rf "$rootfs/var/tmp/grid-repo"
# The lock: one "name version" line per package, sorted. The archive must still hold exactly
# these versions, or the build stops (a point release changed one): rerun with
# GRID_APT_REPO_UPDATE_LOCK=1 after reading the difference, and commit the new lock.
actual=$(for deb in "$repo"/pool/*.deb; do dpkg-deb -f "$deb" Package Version | paste -sd' '; done | sort)
if [ "${GRID_APT_REPO_UPDATE_LOCK:-0}" = 1 ]; then
  mkdir -p "$(dirname "$lock")"
  { echo "# Packages of the $suite test repository (scripts/base-image.sh), pinned by version."
    echo "$actual"; } > "$lock"
  echo "base-image: wrote $lock ($(wc -l <<<"$actual") packages)"
elif ! diff -u <(grep -v '^#' "$lock" 2>/dev/null) <(echo "$actual") > "$repo/lock.diff"; then
  cat "$repo/lock.diff" >&2
  echo "base-image: Debian's $suite archive no longer matches $lock (difference above)." >&2
  echo "base-image: check it, then rebuild with GRID_APT_REPO_UPDATE_LOCK=1 and commit the lock." >&2
  exit 3
fi
rm -f "$repo/lock.diff"

# Index and sign it with a key made for this build; only its public half is kept, in the image.
gnupg=$(mktemp -d)
trap 'gpgconf --homedir "$gnupg" --kill all >/dev/null 2>&1 || true; rm -rf "$gnupg"' EXIT
gpg=(gpg --homedir "$gnupg" --batch --quiet --pinentry-mode loopback --passphrase '')
"${gpg[@]}" --quick-gen-key "desktop-grid test repository ($suite)" ed25519 sign never
(cd "$repo" && dpkg-scanpackages --multiversion pool /dev/null 2>/dev/null > Packages && gzip -9nk Packages)
{
  echo "Origin: desktop-grid"
  echo "Label: desktop-grid test repository"
  echo "Suite: $suite"
  echo "Codename: $suite"
  echo "Date: $(LC_ALL=C date -u -R)"
  echo "SHA256:"
  for f in Packages Packages.gz; do
    printf ' %s %s %s\n' "$(sha256sum "$repo/$f" | cut -d' ' -f1)" "$(stat -c %s "$repo/$f")" "$f"
  done
} > "$repo/Release"
"${gpg[@]}" --clearsign -o "$repo/InRelease" "$repo/Release"
mkdir -p "$rootfs$(dirname "$GRID_REPO_KEYRING")"
"${gpg[@]}" --export > "$rootfs$GRID_REPO_KEYRING"
chmod 0644 "$rootfs$GRID_REPO_KEYRING"

# The image's only package source is the local repository; Debian's archive is unreachable.
rm -f "$rootfs/etc/apt/sources.list" "$rootfs"/etc/apt/sources.list.d/*
cat > "$rootfs/etc/apt/sources.list.d/desktop-grid-local.sources" <<EOF
# The desktop-grid test repository (scripts/base-image.sh), mounted read-only by every container.
Types: deb
URIs: file:$GRID_REPO_MOUNT
Suites: ./
Signed-By: $GRID_REPO_KEYRING
EOF
# Read its index now (through a bind mount), so that a role's first install needs no update.
mkdir -p "$rootfs$GRID_REPO_MOUNT"
mount --bind "$repo" "$rootfs$GRID_REPO_MOUNT"
rm -rf "$rootfs"/var/lib/apt/lists/*
if ! chroot "$rootfs" "${APT[@]}" update -qq; then umount "$rootfs$GRID_REPO_MOUNT"; exit 1; fi
umount "$rootfs$GRID_REPO_MOUNT"
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
{
  echo "suite: $suite"
  echo "packages: $(wc -l <<<"$actual")"
  echo "size_kib: $(du -sk "$repo/pool" | cut -f1)"
} > "$repo/BUILDINFO"
