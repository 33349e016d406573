#!/usr/bin/env bash
# A server started with RUST_BACKTRACE set must still never send a Rust backtrace to a client:
# it would name the extension's internals and the server's layout. The error here is raised by
# PostgreSQL inside the extension's Rust code (a lock timeout while append waits for the stream's
# row), the path on which a backtrace used to be attached to the error's DETAIL.
# Usage: backtrace_test.sh  (starts and removes its own cluster; the extension installed).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
dir=$(mktemp -d /tmp/pg_eventstore-bt.XXXXXX)
chmod 755 "$dir"
port=$(free_port)
cleanup() { stop_cluster "$dir/cluster"; rm -rf "$dir"; }
trap cleanup EXIT
RUST_BACKTRACE=full start_cluster "$dir/cluster" "$port"
psql_() { "$PG_BIN/psql" -X -q -At -h "$dir/cluster" -p "$port" -U postgres -d postgres "$@"; }

failures=0
check() {
    if [ "$2" = "$3" ]; then echo "ok - $1"; else
        echo "not ok - $1"; echo "  got:  $2"; echo "  want: $3"; failures=$((failures + 1)); fi
}
postmaster=$(head -1 "$dir/cluster/data/postmaster.pid")
check "the server runs with RUST_BACKTRACE set" \
      "$(tr '\0' '\n' <"/proc/$postmaster/environ" | grep -c '^RUST_BACKTRACE=full$')" "1"

psql_ -c "CREATE EXTENSION pg_eventstore" -c "SELECT eventstore.append_event('bt-1', 'A', '{}')" >/dev/null
# One session holds the stream's row; the other's append times out waiting for it.
psql_ -c "BEGIN" -c "SELECT eventstore.append_event('bt-1', 'B', '{}')" -c "SELECT pg_sleep(30)" \
      >/dev/null 2>&1 &
holder=$!
for _ in $(seq 1 300); do
    [ "$(psql_ -c "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'")" = 1 ] && break
    sleep 0.1
done
out=$(psql_ -v VERBOSITY=verbose -c "SET lock_timeout = '100ms'" \
            -c "SELECT eventstore.append_event('bt-1', 'C', '{}')" 2>&1 || true)
psql_ -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'" >/dev/null
wait "$holder" 2>/dev/null || true
check "the append fails with the lock timeout's own SQLSTATE" \
      "$(grep -o '55P03: canceling statement due to lock timeout' <<<"$out" | head -1)" \
      "55P03: canceling statement due to lock timeout"
check "no backtrace reaches the client" \
      "$(grep -ciE 'backtrace|rust_begin_unwind|std::panicking|[0-9]+: .*::' <<<"$out" || true)" "0"
[ "$failures" = 0 ] || printf '%s\n' "$out"
echo "backtrace: $((3 - failures)) passed, $failures failed"
[ "$failures" = 0 ]
