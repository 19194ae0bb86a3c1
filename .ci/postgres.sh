#!/usr/bin/env bash
# Install (from Debian's packages) and start a local PostgreSQL server for the JDBC source tests,
# then create the dmine test role and database. Prints the JDBC URL the tests read from
# DMINE_TEST_JDBC_URL. Safe to run twice.
set -euo pipefail

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "postgres.sh: PostgreSQL is not installed; run as root or apt-get install postgresql" >&2
    exit 2
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  apt-get clean
fi

ver="$(ls /usr/lib/postgresql | sort -n | tail -1)"
if command -v pg_lsclusters >/dev/null 2>&1; then
  if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$ver main$"; then
    pg_createcluster "$ver" main >/dev/null
  fi
  if ! pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $4}' | grep -q online; then
    pg_ctlcluster "$ver" main start
  fi
fi

for _ in $(seq 1 30); do
  if su postgres -c "psql -qtAc 'SELECT 1'" >/dev/null 2>&1; then break; fi
  sleep 1
done

su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='dmine'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE ROLE dmine LOGIN PASSWORD 'dmine'\""
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='dmine_test'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE DATABASE dmine_test OWNER dmine\""

echo "jdbc:postgresql://127.0.0.1:5432/dmine_test"
