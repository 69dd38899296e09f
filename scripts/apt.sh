# Sourced, not run: the one apt-get command of the scripts that install Debian packages on this
# machine (scripts/testhosts.sh, scripts/test-deps.sh, scripts/venv.sh and .ci/run).
#
#   apt_get update -qq
#   apt_get install -y -qq --no-install-recommends PACKAGE...
#
# Runs apt-get as root (through sudo when not root), non-interactively. A new cloud machine
# runs unattended-upgrades at boot, which holds apt's locks for minutes. DPkg::Lock::Timeout
# makes apt-get wait for dpkg's lock, but not for the package lists' or the download cache's
# lock: `apt-get update` (apt 2.6, Debian 12) fails at once with "Could not get lock
# /var/lib/apt/lists/lock" while apt-daily holds it. That failure is retried every 5 s until
# the same deadline. Environment: APT_LOCK_TIMEOUT, in seconds (default 600).
APT_LOCK_TIMEOUT=${APT_LOCK_TIMEOUT:-600}

apt_get() {
  local sudo=() err rc waited=0 deadline=$((SECONDS + APT_LOCK_TIMEOUT))
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  err=$(mktemp)
  while :; do
    rc=0
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get -o DPkg::Lock::Timeout="$APT_LOCK_TIMEOUT" "$@" 2>"$err" || rc=$?
    # As root, a failure naming one of apt's lock files means another process holds it (the
    # paths are the same in every language).
    if [ "$rc" -ne 0 ] && [ "$SECONDS" -lt "$deadline" ] \
        && grep -Eq '/(lists|archives|dpkg)/lock' "$err"; then
      if [ "$waited" = 0 ]; then
        echo "apt-get: another package manager holds apt's lock (unattended-upgrades?);" \
          "retrying for up to $APT_LOCK_TIMEOUT s" >&2
        waited=1
      fi
      sleep 5
      continue
    fi
    cat "$err" >&2
    rm -f "$err"
    return "$rc"
  done
}
