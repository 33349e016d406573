#!/usr/bin/env bash
# Runs every test tier against real PostgreSQL servers this script starts itself:
#   1. Rust unit tests (pure logic: envelope validation, jsonb reading, merge, pgoutput
#      decoding, acknowledgement)
#   2. the extension's #[pg_test]s (cargo pgrx test)
#   3. pg_regress (SQL surface), pg_isolation_regress (concurrency), dump/restore, upgrades from
#      every earlier release, no backtraces to clients
#   4. the worker's integration tests (a logical-replication cluster, real processes)
# Installs what it needs first (scripts/setup.sh). Exits non-zero if any tier fails.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

bash scripts/setup.sh

work=$(mktemp -d /tmp/pg_eventstore-test.XXXXXX)
chmod 755 "$work"
cluster=$work/cluster
cleanup() { stop_cluster "$cluster"; rm -rf "$work"; }
trap cleanup EXIT

passed=0 failed=0 failed_tiers=()
tier() {
    local name=$1; shift
    say "test tier: $name"
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); failed_tiers+=("$name"); fi
}

tier "worker unit tests" cargo test -p eventstore-worker
tier "core unit and property tests" cargo test -p eventstore-core

pgrx_data=$work/pgrx-data
install -d -o postgres -g postgres "$pgrx_data"
# One test at a time: several pg_tests append to the same streams, and concurrent
# transactions locking them in different orders can deadlock.
tier "extension unit and pg_test tests" \
    bash -c "cd extension && RUST_TEST_THREADS=1 cargo pgrx test pg$PG_MAJOR --runas postgres --pgdata '$pgrx_data'"

install_extension
port=$(free_port)
start_cluster "$cluster" "$port"
regress_bin=$("$PG_CONFIG" --pkglibdir)/pgxs/src/test
tier "pg_regress" "$regress_bin/regress/pg_regress" --host="$cluster" --port="$port" --user=postgres \
    --dbname=eventstore_regress --inputdir=sql/regress --outputdir="$work/regress" \
    --schedule=sql/regress/schedule
tier "pg_isolation_regress" "$regress_bin/isolation/pg_isolation_regress" --host="$cluster" \
    --port="$port" --user=postgres --dbname=eventstore_isolation --inputdir=sql/isolation \
    --outputdir="$work/isolation" $(cd sql/isolation/specs && ls *.spec | sed 's/\.spec$//')
tier "dump and restore" bash scripts/dump_restore_test.sh "$cluster" "$port"
tier "upgrade from earlier releases" env REGRESS_BIN="$regress_bin/regress/pg_regress" \
    bash scripts/upgrade_test.sh "$cluster" "$port"
tier "no Rust backtrace reaches a client" bash scripts/backtrace_test.sh
for diffs in "$work"/regress/regression.diffs "$work"/isolation/regression.diffs; do
    [ -s "$diffs" ] && cat "$diffs"
done
stop_cluster "$cluster"

tier "worker integration tests" cargo test -p eventstore-integration-tests

echo
echo "test tiers: $passed passed, $failed failed"
if [ "$failed" -gt 0 ]; then
    echo "failed tiers: ${failed_tiers[*]}"
    exit 1
fi
