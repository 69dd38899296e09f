#!/bin/bash
# Start Debian's PostgreSQL server for the coordinator's tests and create their role and database
# (cvmc_test, password cvmc_test, on 127.0.0.1:5432: the default of CVMC_TEST_POSTGRES_URL in
# tests/coordinator/conftest.py, which creates one database per test session there, so the role
# has CREATEDB). Works with or without systemd (pg_ctlcluster). Idempotent.
# Run by scripts/test-deps.sh; needs root or sudo.
set -euo pipefail
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
as_postgres() { $sudo runuser -u postgres -- "$@"; }
version=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$version main"; then
  $sudo pg_createcluster --port 5432 "$version" main >/dev/null
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')
if [[ $port != 5432 ]]; then
  echo "test-postgres: cluster $version/main listens on $port, not 5432; set CVMC_TEST_POSTGRES_URL" >&2
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $4}' | grep -qx online; then
  $sudo pg_ctlcluster "$version" main start
fi
for _ in $(seq 30); do
  pg_isready -q -h 127.0.0.1 -p "$port" && break
  sleep 1
done
pg_isready -h 127.0.0.1 -p "$port"
if [[ $(as_postgres psql -p "$port" -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'cvmc_test'") != 1 ]]; then
  as_postgres psql -p "$port" -q -c "CREATE ROLE cvmc_test LOGIN PASSWORD 'cvmc_test'"
fi
# Each test session (tests/coordinator/conftest.py) creates and drops a database of its own.
if [[ $(as_postgres psql -p "$port" -tAc "SELECT rolcreatedb FROM pg_roles WHERE rolname = 'cvmc_test'") != t ]]; then
  as_postgres psql -p "$port" -q -c "ALTER ROLE cvmc_test CREATEDB"
fi
if [[ $(as_postgres psql -p "$port" -tAc "SELECT 1 FROM pg_database WHERE datname = 'cvmc_test'") != 1 ]]; then
  as_postgres createdb -p "$port" -O cvmc_test cvmc_test
fi
