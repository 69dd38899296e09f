#!/usr/bin/env bash
# `make test`'s two long streams, side by side: pytest and the molecule scenarios
# (scripts/molecule-scenarios.sh). Each keeps about one core busy and spends the rest waiting
# on containers, systemd and daemons (vmstat during a scenario: about half of 2 cores idle), so
# on CI's 2 cores the pair takes little more than the longer of the two alone
# (docs/performance.md, "CI and the lab"). They share nothing they change: their containers,
# names and fixed addresses differ (docs/testing.md, "Side by side"), and scripts/testhosts.sh,
# which both may start, runs one at a time.
#
# Each line is printed as it comes, tagged [pytest] or [molecule]; each stream's whole log is
# also kept in .cache/test-logs/. Both streams run to their end, and the run fails if either
# does. TEST_STREAMS=serial runs them one after the other, untagged (one core, or to read one
# stream's output alone).
# Run by `make test`, after its prerequisites (venv, test-deps, testhosts).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
case "${TEST_STREAMS:-parallel}" in
  serial) pytest && bash scripts/molecule-scenarios.sh; exit ;;
  parallel) ;;
  *) echo "test-streams: TEST_STREAMS must be 'parallel' or 'serial', not '$TEST_STREAMS'" >&2; exit 2 ;;
esac
logs=.cache/test-logs
mkdir -p "$logs"

stream() {  # $1: the stream's name; the rest: its command
  local name=$1 t0 rc
  shift
  t0=$(date +%s)
  "$@" < /dev/null 2>&1 | tee "$logs/$name.log" | sed -u "s/^/[$name] /"
  rc=${PIPESTATUS[0]}
  echo "[$name] exit $rc after $(( $(date +%s) - t0 )) s (whole log: $logs/$name.log)"
  return "$rc"
}

# An interrupt or a kill stops both streams (background jobs of a script ignore SIGINT).
pids=()
trap 'trap - INT TERM; kill -- "${pids[@]/#/-}" 2>/dev/null; kill "${pids[@]}" 2>/dev/null; exit 130' INT TERM
set -m  # each stream in its own process group, so that the trap stops all of its processes
stream pytest pytest & pids+=($!)
stream molecule bash scripts/molecule-scenarios.sh & pids+=($!)
set +m
rc_pytest=0 rc_molecule=0
wait "${pids[0]}" || rc_pytest=$?
wait "${pids[1]}" || rc_molecule=$?
echo "test-streams: pytest exit $rc_pytest, molecule exit $rc_molecule"
[ "$rc_pytest" -eq 0 ] && [ "$rc_molecule" -eq 0 ]
