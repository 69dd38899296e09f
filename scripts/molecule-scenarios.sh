#!/usr/bin/env bash
# `make molecule`: every molecule scenario but the stub `default`, in name order, each with its
# time. A scenario with an executable molecule/<s>/skip-reason (a live scenario, such as
# `windows`) runs only when that script exits 1; otherwise the skip and its reason are printed.
# The first scenario that fails ends the run with its exit status.
set -euo pipefail
cd "$(dirname "$0")/.."
for dir in molecule/*/; do
  s=$(basename "$dir")
  [ "$s" != default ] || continue
  if [ -x "molecule/$s/skip-reason" ] && reason=$("molecule/$s/skip-reason"); then
    echo "=== SKIPPED molecule test -s $s: $reason"
    continue
  fi
  echo "=== molecule test -s $s"
  t0=$(date +%s)
  molecule test -s "$s"
  echo "=== molecule test -s $s took $(( $(date +%s) - t0 )) s"
done
