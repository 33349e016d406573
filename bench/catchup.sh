#!/usr/bin/env bash
# Catch-up from the table: how fast eventstore-worker folds stored events into projections
# when it starts after they were written, against the raw speed of reading the same rows in
# global_position order. A benchmark: it prints figures and the ratio, it does not pass or fail.
#
#   bash bench/catchup.sh            # full: BENCH_ROUNDS rounds per side, medians reported
#   bash bench/catchup.sh --quick    # smoke run (or BENCH_QUICK=1): 20,000 events, 1 round
#
# Settings (environment):
#   BENCH_EVENTS   stored order events (3 per order)             (default 200000)
#   BENCH_ROUNDS   rounds per side; median reported               (default 3; --quick: 1)
#   BENCH_INSTALL  1 = build and install the extension first     (default: only when missing)
#
#   raw     psql reading every event in global_position order through a cursor (FETCH_COUNT
#           5000, the worker's chunk), with the columns the worker reads, to /dev/null
#   worker  first start of the worker on the populated store with the two order projections
#           of examples/orders-worker.toml (order_summary, customer_revenue): from process
#           start until both are built, swapped in and following the stream (events/s over
#           all stored events); and the snapshot phase alone, as the worker logs it
#   no-op   the same first start with one projection whose handlers change nothing (a DELETE
#           from an empty table, compiled into the build's apply function like the real ones):
#           the cost of reading, envelopes and the apply path, without the handlers' work
# Each worker round starts from nothing: no slot, no worker schema, no read-model tables.
#
# Every figure printed is also recorded under catchup.* (scripts/lib.sh `record`) for the
# report. EVENTSTORE_WORKER_BIN names a worker binary to use instead of building one.
set -eEuo pipefail
# A failed command inside a function or $(...) would otherwise end the run without a word.
trap 'echo "error: bench/catchup.sh line $LINENO: $BASH_COMMAND" >&2' ERR

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../scripts/lib.sh
source "$HERE/../scripts/lib.sh"
PSQL=$PG_BIN/psql

bench_args "${BASH_SOURCE[0]}" "$@"
if [ "$QUICK" = 1 ]; then EVENTS=${BENCH_EVENTS:-20000}; ROUNDS=${BENCH_ROUNDS:-1}; else EVENTS=${BENCH_EVENTS:-200000}; ROUNDS=${BENCH_ROUNDS:-3}; fi

ensure_extension
worker_binary
worker_bin=$WORKER_BIN

# --- a throwaway cluster, stopped and removed on exit (with the worker, if running) ---------
bench_cluster pg_eventstore_catchup_bench shared_buffers=256MB max_wal_size=2GB
worker_pid=""
trap '[ -n "$worker_pid" ] && kill -TERM "$worker_pid" 2>/dev/null; wait 2>/dev/null; stop_cluster "$DIR"; rm -rf "$DIR"' EXIT
sql() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -At -d app "$@"; }
"$PG_BIN/createdb" app

# --- the store: order lives of 3 events (placed, paid, shipped), 10,000 orders per transaction
orders=$(( (EVENTS + 2) / 3 ))
say "appending $((orders * 3)) events ($orders orders)"
sql -c "CREATE EXTENSION pg_eventstore" >/dev/null
for ((first = 1; first <= orders; first += 10000)); do
    last=$(( first + 9999 < orders ? first + 9999 : orders ))
    sql -v first="$first" -v last="$last" >/dev/null <<'SQL'
SELECT count(*) FROM generate_series(:first, :last) AS o,
LATERAL (SELECT 'c' || (o % 997) AS c, round((5 + (o % 500) * 1.01)::numeric, 2) AS t) AS v,
LATERAL eventstore.append('order-' || o, jsonb_build_array(
    jsonb_build_object('type', 'OrderPlaced', 'data', jsonb_build_object('order_id', o::text, 'customer_id', c, 'total', t)),
    jsonb_build_object('type', 'PaymentCaptured', 'data', jsonb_build_object('order_id', o::text, 'customer_id', c, 'amount', t)),
    jsonb_build_object('type', 'OrderShipped', 'data', jsonb_build_object('order_id', o::text, 'customer_id', c, 'carrier', 'dhl'))));
SQL
done
sql -c "VACUUM ANALYZE eventstore.events" -c "CHECKPOINT"
total=$(sql -c "SELECT count(*) FROM eventstore.events")

now() { date +%s.%N; }
# The worker reads stored events in chunks of this many rows; the raw read fetches the same.
CHUNK=5000
record catchup.events "$total"
record catchup.orders "$orders"
record catchup.rounds "$ROUNDS"
record catchup.chunk "$CHUNK"
record catchup.shared_buffers_mib "$(sql -c "SELECT pg_size_bytes(current_setting('shared_buffers')) / 1048576")" MiB

# --- raw: the rows in global_position order, through a cursor, to /dev/null ------------------
columns="stream_id, stream_version, global_position, event_id::text, event_type, data::text, metadata::text, recorded_at::text"
raw_read() {
    "$PSQL" -X -q -At -d app -v FETCH_COUNT="$CHUNK" \
        -c "SELECT $columns FROM eventstore.events ORDER BY global_position" >/dev/null
}
say "raw: reading $total events in global_position order ($ROUNDS rounds after a warm-up)"
raw_read
raw_rates=()
for ((r = 1; r <= ROUNDS; r++)); do
    t0=$(now); raw_read; t1=$(now)
    raw_rates+=("$(per_second "$total" "$t0" "$t1")")
    record "catchup.round.$r.raw" "${raw_rates[-1]}" ev/s
done

# --- the worker: first start on the populated store --------------------------------------------
worker_config "$DIR/worker.toml" 2

worker_config "$DIR/noop.toml" 0 <<'TOML'
[[projection]]
name = "noop"
setup = "CREATE TABLE IF NOT EXISTS bench_noop (id int)"
[projection.handlers]
OrderPlaced = "DELETE FROM bench_noop WHERE $1 IS NULL"
PaymentCaptured = "DELETE FROM bench_noop WHERE $1 IS NULL"
OrderShipped = "DELETE FROM bench_noop WHERE $1 IS NULL"
TOML

# first_start CONFIG PROJECTIONS LOG: seconds from process start until PROJECTIONS projections
# follow the stream, starting from nothing.
first_start() {
    local config=$1 projections=$2 log=$3 t0 t1
    sql >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'eventstore_worker';
DROP SCHEMA IF EXISTS eventstore_worker CASCADE;
DROP TABLE IF EXISTS order_summary, customer_revenue, bench_noop;
CHECKPOINT;
SQL
    t0=$(now)
    RUST_LOG=${RUST_LOG:-info} "$worker_bin" run --config "$config" >"$log" 2>&1 &
    worker_pid=$!
    until [ "$(sql -c "SELECT count(*) FROM eventstore_worker.projections WHERE status = 'running'" 2>/dev/null || echo 0)" = "$projections" ]; do
        kill -0 "$worker_pid" 2>/dev/null || { tail -20 "$log"; die "the worker exited"; }
        sleep 0.02
    done
    t1=$(now)
    cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$worker_pid/stat")
    kill -TERM "$worker_pid"; wait "$worker_pid" || true; worker_pid=""
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') $cpu"
}
# The snapshot phase's rate as the worker logs it; empty (not measured) when the line is missing.
snapshot_rate() {
    sed 's/\x1b\[[0-9;]*m//g' "$1" | grep -o 'snapshot applied.*per_second=[0-9]*' | grep -o '[0-9]*$' | head -1 || true
}

worker_rates=() worker_cpu=() worker_cpu_pct=() snapshot_rates=() noop_rates=()
for ((r = 1; r <= ROUNDS; r++)); do
    say "worker round $r: first start, building order_summary and customer_revenue from $total events"
    read -r seconds cpu <<<"$(first_start "$DIR/worker.toml" 2 "$DIR/worker.$r.log")"
    worker_rates+=("$(awk -v n="$total" -v s="$seconds" 'BEGIN { printf "%.0f", n / s }')")
    worker_cpu_pct+=("$(awk -v c="$cpu" -v s="$seconds" 'BEGIN { printf "%.0f", 100 * c / s }')")
    worker_cpu+=("${worker_cpu_pct[-1]}%")
    snapshot_rates+=("$(snapshot_rate "$DIR/worker.$r.log")")
    record "catchup.round.$r.worker" "${worker_rates[-1]}" ev/s
    record "catchup.round.$r.worker_cpu_pct" "${worker_cpu_pct[-1]}" %
    record "catchup.round.$r.snapshot" "${snapshot_rates[-1]}" ev/s
    # The built read model is exact: one row per order, every order shipped after 3 events.
    shipped=$(sql -c "SELECT count(*) FROM order_summary WHERE status = 'shipped' AND event_count = 3")
    [ "$shipped" = "$orders" ] || die "order_summary has $shipped shipped orders, expected $orders"
    say "worker round $r: the same with no-op handlers"
    first_start "$DIR/noop.toml" 1 "$DIR/noop.$r.log" >/dev/null
    noop_rates+=("$(snapshot_rate "$DIR/noop.$r.log")")
    record "catchup.round.$r.noop" "${noop_rates[-1]}" ev/s
done

raw=$(printf '%s\n' "${raw_rates[@]}" | median)
worker=$(printf '%s\n' "${worker_rates[@]}" | median)
snapshot=$(printf '%s\n' "${snapshot_rates[@]}" | median)
noop=$(printf '%s\n' "${noop_rates[@]}" | median)
cpu_pct=$(printf '%s\n' "${worker_cpu_pct[@]}" | median)
ratio=$(ratio "$worker" "$raw")
ratio_snapshot=$([ -z "$snapshot" ] || ratio "$snapshot" "$raw")
record catchup.raw "$raw" ev/s
record catchup.worker "$worker" ev/s
record catchup.worker_cpu_pct "$cpu_pct" %
record catchup.snapshot "$snapshot" ev/s
record catchup.noop "$noop" ev/s
record catchup.ratio "$ratio"
record catchup.ratio_snapshot "$ratio_snapshot"
echo
echo "catch-up from the table ($(nproc) cores, $total stored events, medians of $ROUNDS)"
printf '  raw read, global_position order      %8s events/s   (rounds: %s)\n' "$raw" "${raw_rates[*]}"
printf '  worker, start to both projections    %8s events/s   (rounds: %s; worker process CPU: %s of wall time)\n' \
    "$worker" "${worker_rates[*]}" "${worker_cpu[*]}"
printf '  worker, snapshot phase alone         %8s events/s   (rounds: %s)\n' "$snapshot" "${snapshot_rates[*]}"
printf '  snapshot phase, no-op handlers       %8s events/s   (rounds: %s)\n' "$noop" "${noop_rates[*]}"
printf '  ratio worker/raw                     %8s\n' "$ratio"
printf '  ratio snapshot phase/raw             %8s\n' "$ratio_snapshot"
