#!/usr/bin/env bash
# Prepare this machine (Debian 12) to run the project's test hosts: podman containers with
# systemd as PID 1 on `--internal` networks. `make lab`, `make test`, CI and every molecule
# scenario call this one script; each step is idempotent and cheap when already done.
#
#   1. install podman, runc, debootstrap and the repository tools (if missing);
#   2. build the Debian 12 and Debian 13 systemd base images with debootstrap + `podman import`,
#      and beside each the local apt repository its containers install from (the roles' packages:
#      HTCondor, OpenVPN, nginx, ...), tagged with a hash of their recipe (scripts/base-image.sh)
#      and lock file (scripts/apt-repo/<suite>.lock): rebuilt only when one of them changes;
#   3. pin podman to runc (crun refuses hybrid cgroup layouts) and, only where the OCI runtime
#      may not set rlimits, route it through scripts/runc-norlimits;
#   4. prove a systemd container boots, and that a container starts on an --internal network;
#   5. create the test networks, always `--internal` (no route off this machine).
#
# Containers mount their suite's repository read-only at /srv/desktop-grid-apt, from
# $GRID_APT_DIR/<suite> (default /var/cache/desktop-grid/apt/bookworm or .../trixie).
# Environment: GRID_TESTHOSTS_MIRROR overrides the Debian mirror (default: this machine's apt
# source); GRID_APT_REPO_UPDATE_LOCK=1 rewrites the lock files from the archive (then commit
# them). Prints the image references on the last lines.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Base images by Debian suite: bookworm (Debian 12) and trixie (Debian 13, which ships HTCondor).
IMAGE_PREFIX=localhost/desktop-grid
SUITES=(bookworm=debian12 trixie=debian13)
# The image the runtime and smoke tests start.
IMAGE=$IMAGE_PREFIX/debian12
APT_DIR=${GRID_APT_DIR:-/var/cache/desktop-grid/apt}
# Networks the lab inventory and the molecule scenarios attach their containers to, with fixed
# subnets so that inventories can name them (inventories/lab/group_vars/all/grid.yml).
NETWORKS=(grid-lab=10.89.64.0/24 grid-campus=10.89.66.0/24 grid-molecule=10.89.65.0/24
          grid-vpn-carrier=10.89.67.0/24 grid-vpn-pool=10.89.68.0/24)
SHIM_DIR=/usr/local/libexec/desktop-grid
DROPIN=/etc/containers/containers.conf.d/50-desktop-grid.conf
# apt_get: apt-get that waits for apt's locks (unattended-upgrades on a new machine).
# shellcheck source=scripts/apt.sh
. "$here/apt.sh"

log() { printf 'testhosts: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "run as root (podman, debootstrap and apt need it)"
  exec sudo -E "$0" "$@"
fi

# --- 1. packages ---------------------------------------------------------------------------
install_packages() {
  local missing=() pkg
  # iptables: netavark (Debian 12) sets up every bridge network with it, --internal ones too;
  # without it a container on a network fails with "netavark: No such file or directory".
  # dpkg-dev (dpkg-scanpackages) and gpg index and sign the local apt repositories.
  for pkg in podman runc debootstrap netavark aardvark-dns iptables python3 dpkg-dev gpg; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The Debian mirror this machine already uses (no host is hard-coded in the project).
debian_mirror() {
  if [ -n "${GRID_TESTHOSTS_MIRROR:-}" ]; then echo "$GRID_TESTHOSTS_MIRROR"; return; fi
  local uri
  uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1=="deb" && $3 !~ /security/ {print ($2 ~ /^\[/ ? $3 : $2); exit}' \
                         /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
  [ -n "$uri" ] || die "no Debian mirror found in /etc/apt; set GRID_TESTHOSTS_MIRROR"
  echo "$uri"
}

# --- 0. records of killed containers --------------------------------------------------------
# When a machine's processes are all killed without a reboot (a session's end, a CI runner that
# reuses its host, the OOM killer on conmon), podman's records survive in /run, which is not a
# tmpfs on every host: a container it calls "running" whose processes are gone ("cannot exec in
# a stopped container"), still holding its network namespace and its fixed address, and lock
# numbers that no longer match /dev/shm. `make lab` then "starts" a dead container and fails on
# its first command. Repair podman's records before anything uses them.
# alive PID: the process exists and is not a zombie (a killed init whose conmon died too waits
# unreaped, and `kill -0` still finds it).
alive() {
  local stat
  [ "${1:-0}" -gt 0 ] && stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  case "${stat%% *}" in Z|X|x) return 1 ;; esac
}

recover_killed_containers() {
  local ids=() id status pid conmon labels name nets net spec ours
  # No podman and no conmon alive: no lock can be held and no container can run, so every
  # lock is re-created (one held by a killed podman would hang the next command for ever).
  if ! pgrep -x conmon >/dev/null && ! pgrep -x podman >/dev/null; then
    podman system renumber || die "podman system renumber failed"
  fi
  mapfile -t ids < <(podman ps -aq)
  [ ${#ids[@]} -gt 0 ] || return 0
  while IFS='|' read -r id status pid conmon labels name nets; do
    case "$status" in running|paused|stopping) ;; *) continue ;; esac
    if alive "$pid" && alive "$conmon"; then continue; fi
    # The project's own: labelled desktop-grid.* (the lab's, the image builds') or on one of
    # its test networks (molecule's).
    ours=""
    case " $labels" in *" desktop-grid."*) ours=yes ;; esac
    for spec in "${NETWORKS[@]}"; do
      for net in $nets; do [ "$net" = "${spec%%=*}" ] && ours=yes; done
    done
    if [ -n "$ours" ]; then
      log "container $name: podman records it $status, but its processes ($pid, conmon $conmon) are gone; removing it and its network namespace"
      # Gone already is as good: a run beside this one (make test's two streams) may be
      # removing it.
      podman rm -f "$id" >/dev/null 2>&1 || ! podman container exists "$id" \
        || die "could not remove the dead container $name"
    else
      log "WARNING: container $name (not the project's) is recorded $status, but its processes are gone; left as it is"
    fi
  done < <(podman inspect --format \
      '{{.Id}}|{{.State.Status}}|{{.State.Pid}}|{{.State.ConmonPid}}|{{range $k, $v := .Config.Labels}}{{$k}} {{end}}|{{.Name}}|{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' \
      "${ids[@]}")
}

# --- 3. OCI runtime ------------------------------------------------------------------------
write_dropin() {  # $1: the default runtime's name, $2: the shim's path if installed (or "")
  local tmp
  mkdir -p "$(dirname "$DROPIN")"
  tmp=$(mktemp "$DROPIN.XXXXXX")
  {
    echo "# Written by desktop-grid scripts/testhosts.sh. Remove to restore podman's defaults."
    echo "[engine]"
    echo "runtime = \"$1\""
    if [ -n "$2" ]; then
      echo "[engine.runtimes]"
      echo "runc-norlimits = [\"$2\"]"
    fi
  } > "$tmp"
  chmod 0644 "$tmp"
  if cmp -s "$tmp" "$DROPIN" 2>/dev/null; then rm -f "$tmp"; else mv -f "$tmp" "$DROPIN"; log "podman runtime: $1"; fi
}

configure_runtime() {
  local out runc shim=""
  runc=$(command -v runc) || die "runc is not installed"
  # Containers created under the shim name it in their own configuration: once installed, its
  # runtime entry stays, or every podman command on them fails ("runtime runc-norlimits is
  # missing"). Only the default runtime changes.
  [ -x "$SHIM_DIR/runc-norlimits" ] && shim="$SHIM_DIR/runc-norlimits"
  if out=$(podman run --rm --runtime "$runc" --network none "$IMAGE:latest" /bin/true 2>&1); then
    write_dropin runc "$shim"
    return 0
  fi
  grep -q 'rlimit' <<<"$out" || die "podman cannot start a container: $out"
  install -D -m 0755 "$here/runc-norlimits" "$SHIM_DIR/runc-norlimits"
  write_dropin runc-norlimits "$SHIM_DIR/runc-norlimits"
  out=$(podman run --rm --network none "$IMAGE:latest" /bin/true 2>&1) \
    || die "podman still cannot start a container with the runc-norlimits shim: $out"
}

# --- 2. base image -------------------------------------------------------------------------
recipe_tag() {  # $1: suite
  { cat "$here/base-image.sh"; cat "$here/apt-repo/$1.lock" 2>/dev/null || true; echo "$1"; } \
    | sha256sum | cut -c1-12
}

build_image() {  # $1: suite, $2: image name (debian12, debian13)
  local suite=$1 image=$IMAGE_PREFIX/$2 tag work mirror repo start building
  tag=$(recipe_tag "$suite")
  repo=$APT_DIR/$suite-$tag
  if [ "${GRID_APT_REPO_UPDATE_LOCK:-0}" != 1 ] && podman image exists "$image:$tag" && [ -f "$repo/InRelease" ]; then
    podman tag "$image:$tag" "$image:latest"
    ln -sfn "$suite-$tag" "$APT_DIR/$suite"
    return 0
  fi
  mirror=$(debian_mirror)
  log "building $image:$tag and its apt repository with debootstrap (a few minutes)"
  start=$(date +%s)
  work=$(mktemp -d /var/tmp/desktop-grid-rootfs.XXXXXX)
  mkdir -p "$APT_DIR"
  building=$APT_DIR/.building-$suite
  rm -rf "$building"
  bash "$here/base-image.sh" "$suite" "$work/rootfs" "$building" "$mirror" > "$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log" >&2; rm -rf "$work" "$building"; die "building the $suite image failed (log above)"; }
  # A rewritten lock changes the recipe's hash: tag the result with the new one.
  tag=$(recipe_tag "$suite")
  repo=$APT_DIR/$suite-$tag
  tar -C "$work/rootfs" -c . | podman import --quiet \
      --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' \
      --message "desktop-grid test host ($suite), recipe $tag" - "$image:$tag" >/dev/null
  rm -rf "$work" "$repo"
  mv "$building" "$repo"
  echo "build_seconds: $(( $(date +%s) - start ))" >> "$repo/BUILDINFO"
  podman tag "$image:$tag" "$image:latest"
  ln -sfn "$suite-$tag" "$APT_DIR/$suite"
  log "built $image:$tag; repository $repo: $(tr '\n' ' ' < "$repo/BUILDINFO")"
}

# --- 4. smoke test: systemd boots as PID 1 --------------------------------------------------
smoke_test() {
  local name=desktop-grid-smoke state="" i
  podman rm -f "$name" >/dev/null 2>&1 || true
  podman run -d --name "$name" --network none --systemd=always "$IMAGE:latest" /sbin/init >/dev/null
  for i in $(seq 1 30); do
    state=$(podman exec "$name" systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    sleep 1
  done
  podman rm -f "$name" >/dev/null 2>&1 || true
  case "$state" in running|degraded) ;; *) die "systemd did not come up in the base image (state: '${state:-none}')" ;; esac
}

# --- 5. networks ---------------------------------------------------------------------------
create_networks() {
  local spec net subnet internal actual
  for spec in "${NETWORKS[@]}"; do
    net=${spec%%=*} subnet=${spec#*=}
    if podman network exists "$net"; then
      internal=$(podman network inspect -f '{{.Internal}}' "$net")
      [ "$internal" = "true" ] || die "podman network '$net' exists but is not --internal; remove it first"
      actual=$(podman network inspect -f '{{range .Subnets}}{{.Subnet}} {{end}}' "$net")
      [ "${actual% }" = "$subnet" ] || die "podman network '$net' has subnet '${actual% }', not $subnet; remove it first"
    else
      podman network create --internal --subnet "$subnet" "$net" >/dev/null
      log "created internal network $net ($subnet)"
    fi
  done
}

# A container on one of the test networks: proves the network backend works (netavark and its
# firewall tools), which --network none above does not exercise.
network_smoke_test() {
  local out
  out=$(podman run --rm --network grid-lab "$IMAGE:latest" /bin/true 2>&1) \
    || die "podman cannot start a container on the internal network grid-lab: $out"
}

# One run at a time (make lab, make test and molecule may start it together). flock -o holds
# the lock in flock itself and closes it in this script: a daemon the run starts (aardvark-dns,
# conmon, gpg-agent) must never inherit the lock and hold it after the run, or the next run
# would wait for ever (a CI run waited 3600 s here, silently). The wait is bounded and names
# whoever holds the lock.
LOCK=/run/lock/desktop-grid-testhosts.lock
LOCK_WAIT_S=${GRID_TESTHOSTS_LOCK_WAIT_S:-900}
if [ -z "${__GRID_TESTHOSTS_LOCKED:-}" ]; then
  export __GRID_TESTHOSTS_LOCKED=1
  rc=0
  flock -o -w "$LOCK_WAIT_S" -E 75 "$LOCK" "$BASH" "$0" "$@" || rc=$?
  if [ "$rc" -eq 75 ]; then
    holders=$(for fd in /proc/[0-9]*/fd/*; do
                [ "$(readlink "$fd" 2>/dev/null)" = "$LOCK" ] && { pid=${fd#/proc/}; pid=${pid%%/*}
                  printf '  %s %s\n' "$pid" "$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)"; }
              done | sort -u) || true
    die "another process has held $LOCK for $LOCK_WAIT_S s:"$'\n'"${holders:-  (none found)}"
  fi
  exit "$rc"
fi
# Every podman call is bounded: a podman that hangs (a stale storage lock) fails the run with
# the command's name instead of holding it for ever.
PODMAN_TIMEOUT_S=${GRID_TESTHOSTS_PODMAN_TIMEOUT_S:-900}
podman() {
  local rc=0
  timeout --kill-after=10 "$PODMAN_TIMEOUT_S" podman "$@" || rc=$?
  [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || log "ERROR: 'podman $*' did not finish in $PODMAN_TIMEOUT_S s"
  return "$rc"
}
log "started (pid $$): packages, dead containers, base images, runtime, smoke tests, networks"
install_packages
recover_killed_containers
for spec in "${SUITES[@]}"; do build_image "${spec%%=*}" "${spec#*=}"; done
configure_runtime
smoke_test
create_networks
network_smoke_test
log "ready"
for spec in "${SUITES[@]}"; do echo "$IMAGE_PREFIX/${spec#*=}:latest"; done
