#!/bin/bash
# Download Debian's libpam-systemd for a suite and the exact systemd version a test container
# runs, authenticated by this machine's debian-archive-keyring, into DEST. The base images
# (debootstrap --variant=minbase) leave it out, and without pam_systemd no logon becomes a
# logind session; a real desktop has it (systemd recommends it). apt works in a private
# directory under DEST, so the host's own apt state is untouched.
#   fetch-libpam-systemd.sh SUITE VERSION DEST   prints the .deb's path
set -euo pipefail
suite=${1:?usage: fetch-libpam-systemd.sh SUITE VERSION DEST}
version=${2:?usage: fetch-libpam-systemd.sh SUITE VERSION DEST}
dest=${3:?usage: fetch-libpam-systemd.sh SUITE VERSION DEST}
root="$dest/apt-$suite"
mkdir -p "$root/lists/partial" "$root/cache/archives/partial" "$root/etc"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
{
  echo "deb [signed-by=$keyring arch=amd64] http://deb.debian.org/debian $suite main"
  echo "deb [signed-by=$keyring arch=amd64] http://deb.debian.org/debian $suite-updates main"
  echo "deb [signed-by=$keyring arch=amd64] http://deb.debian.org/debian-security $suite-security main"
} > "$root/etc/sources.list"
apt=(apt-get -q -o "Dir::Etc::SourceList=$root/etc/sources.list" -o Dir::Etc::SourceParts=/nonexistent
  -o "Dir::State::Lists=$root/lists" -o "Dir::Cache=$root/cache" -o APT::Architecture=amd64
  -o Acquire::Languages=none)
# apt-get download names the file after the package's version (an epoch's ':' as %3a).
deb="$dest/libpam-systemd_${version//:/%3a}_amd64.deb"
if [[ ! -f $deb ]]; then
  "${apt[@]}" update >/dev/null
  (cd "$dest" && "${apt[@]}" download "libpam-systemd=$version" >/dev/null)
fi
[[ -f $deb ]] || { echo "fetch-libpam-systemd: $deb was not downloaded" >&2; exit 1; }
echo "$deb"
