#!/usr/bin/env bash
# Read models kept by eventstore-worker against the design users would build instead: a
# synchronous trigger on eventstore.events that updates the same read models inside the
# appending transaction. The question: what append throughput does each design leave the
# writers? A benchmark: it prints figures and ratios, it does not pass or fail.
#
#   bash bench/trigger.sh            # full: BENCH_ROUNDS rounds of BENCH_SECONDS per design
#   bash bench/trigger.sh --quick    # smoke run (or BENCH_QUICK=1): one round of 4 s each
#
# Settings (environment):
#   BENCH_CLIENTS  pgbench clients                           (default 8)
#   BENCH_SECONDS  seconds of load per design and round      (default 15; --quick: 4)
#   BENCH_ROUNDS   rounds; medians reported                  (default 3;  --quick: 1)
#   EVENTSTORE_WORKER_BIN  use this worker binary instead of building one
#
# Load: bench/worker/orders.pgbench (an order's life in two transactions, 3 events, 1,000
# customers), durable appends (fsync on, synchronous_commit on), on one throwaway cluster.
#   bare     appends only, nothing consumes them: the reference
#   worker   eventstore-worker following the WAL into order_summary and customer_revenue (the
#            first two projections of examples/orders-worker.toml)
#   trigger  no worker: bench/trigger/trigger.sql, an AFTER INSERT FOR EACH ROW trigger that
#            builds the worker's envelope and runs the same handlers' SQL inline
# The designs alternate within each round, in an order that rotates from round to round, and
# every run starts from an empty store. Reported per design: committed events/s (events in the
# store after the run / BENCH_SECONDS), pgbench's average latency of one order's life (both
# transactions), and the ratios to bare. After each worker run (once the worker has caught up)
# and each trigger run, both read models must equal a from-scratch fold of eventstore.events
# (bench/trigger/check.sql), or the benchmark stops.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../scripts/lib.sh
source "$HERE/../scripts/lib.sh"
PGBENCH=$PG_BIN/pgbench
PSQL=$PG_BIN/psql

bench_args "${BASH_SOURCE[0]}" "$@"
if [ "$QUICK" = 1 ]; then
    SECONDS_PER_RUN=${BENCH_SECONDS:-4}; ROUNDS=${BENCH_ROUNDS:-1}
else
    SECONDS_PER_RUN=${BENCH_SECONDS:-15}; ROUNDS=${BENCH_ROUNDS:-3}
fi
CLIENTS=${BENCH_CLIENTS:-8}
JOBS=$(nproc)
[ "$JOBS" -gt "$CLIENTS" ] && JOBS=$CLIENTS
# Seconds the worker may take to start, and to catch up after a run, before that counts as broken.
WORKER_START_LIMIT=60
WORKER_CATCHUP_LIMIT=300

worker_binary

# --- a throwaway cluster, stopped and removed on exit (with the worker, if running) ---------
# synchronous_commit=on is the default; said here because durable appends are what is compared.
bench_cluster pg_eventstore_trigger_bench shared_buffers=256MB max_wal_size=2GB synchronous_commit=on
worker_pid=""
trap '[ -n "$worker_pid" ] && kill -TERM "$worker_pid" 2>/dev/null; wait 2>/dev/null; stop_cluster "$DIR"; rm -rf "$DIR"' EXIT
"$PG_BIN/createdb" app
export PGDATABASE=app
sql() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -At "$@"; }

# The two order projections of the example (everything before the third [[projection]]); the
# trigger's tables are made by the same setup SQL, so both designs write identical tables.
worker_config "$DIR/worker.toml" 2
python3 - "$DIR/worker.toml" >"$DIR/setup.sql" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    for projection in tomllib.load(f)["projection"]:
        print(projection["setup"].strip().rstrip(";") + ";")
PY

# reset: an empty store and nothing of any design left, so every run starts alike. The
# publication goes too: dropping the events table would leave it existing but empty, and the
# worker only creates it when it is missing.
reset() {
    sql >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'eventstore_worker';
DROP PUBLICATION IF EXISTS eventstore_events;
DROP SCHEMA IF EXISTS eventstore_worker, bench CASCADE;
DROP TABLE IF EXISTS order_summary, customer_revenue;
DROP SEQUENCE IF EXISTS bench_orders;
DROP EXTENSION IF EXISTS pg_eventstore CASCADE;
CREATE EXTENSION pg_eventstore;
CREATE SEQUENCE bench_orders;
CHECKPOINT;
SQL
}

# load NAME: the order workload for SECONDS_PER_RUN; sets EVENTS (committed) and LATENCY (ms).
load() {
    local out
    out=$("$PGBENCH" -n -c "$CLIENTS" -j "$JOBS" -T "$SECONDS_PER_RUN" -f "$HERE/worker/orders.pgbench" 2>&1) \
        || { echo "$out" >&2; die "pgbench failed in the $1 run"; }
    if grep -q 'number of failed transactions: [1-9]' <<<"$out"; then
        echo "$out" >&2; die "pgbench had failed transactions in the $1 run"
    fi
    LATENCY=$(sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p' <<<"$out")
    [ -n "$LATENCY" ] || { echo "$out" >&2; die "no latency in pgbench output"; }
    EVENTS=$(sql -c "SELECT count(*) FROM eventstore.events")
    [ "$EVENTS" -gt 0 ] || die "the $1 run appended no events"
}

# check NAME: both read models equal a fold of the stored events.
check() {
    local diff
    diff=$(sql -F ' ' -f "$HERE/trigger/check.sql")
    [ "$diff" = "0 0" ] || die "$1 run: read models differ from a fold of eventstore.events" \
        "(rows missing, extra or different: order_summary ${diff% *}, customer_revenue ${diff#* })"
}

worker_alive() {
    kill -0 "$worker_pid" 2>/dev/null || { tail -20 "$1" >&2; die "the worker exited (log: $1)"; }
}

run_bare() {
    reset
    load bare
}

run_trigger() {
    reset
    sql -f "$DIR/setup.sql" -f "$HERE/trigger/trigger.sql" >/dev/null
    load trigger
    check trigger
}

# The worker starts on the empty store (a first start on a non-empty one builds from the table
# instead of following the stream), and the load begins once both projections follow the stream.
CATCHUP=()
run_worker() {
    local log=$DIR/worker.$1.log t0 t1 limit
    reset
    RUST_LOG=${RUST_LOG:-info} "$WORKER_BIN" run --config "$DIR/worker.toml" >"$log" 2>&1 &
    worker_pid=$!
    limit=$((SECONDS + WORKER_START_LIMIT))
    until [ "$(sql -c "SELECT count(*) FROM eventstore_worker.projections WHERE status = 'running'" 2>/dev/null || echo 0)" = 2 ]; do
        worker_alive "$log"
        [ "$SECONDS" -lt "$limit" ] || die "the worker's projections were not running after ${WORKER_START_LIMIT}s (log: $log)"
        sleep 0.05
    done
    load worker
    # order_summary handles every event type of the load, so its count reaches the total.
    t0=$(date +%s.%N)
    limit=$((SECONDS + WORKER_CATCHUP_LIMIT))
    until [ "$(sql -c "SELECT events_applied FROM eventstore_worker.projections WHERE name = 'order_summary'")" -ge "$EVENTS" ]; do
        worker_alive "$log"
        [ "$SECONDS" -lt "$limit" ] || die "the worker had not caught up ${WORKER_CATCHUP_LIMIT}s after the load (log: $log)"
        sleep 0.05
    done
    t1=$(date +%s.%N)
    CATCHUP+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')")
    kill -TERM "$worker_pid"; wait "$worker_pid" || true; worker_pid=""
    check worker
}

designs=(bare worker trigger)
declare -A rates latencies
for ((r = 1; r <= ROUNDS; r++)); do
    for ((i = 0; i < ${#designs[@]}; i++)); do
        design=${designs[(i + r - 1) % ${#designs[@]}]}
        say "round $r/$ROUNDS: $design, $CLIENTS clients for ${SECONDS_PER_RUN}s"
        "run_$design" "$r"
        rates[$design]+="$((EVENTS / SECONDS_PER_RUN)) "
        latencies[$design]+="$LATENCY "
    done
done

median_of() { tr ' ' '\n' | grep . | median; }
declare -A rate latency
for design in "${designs[@]}"; do
    rate[$design]=$(printf '%.0f' "$(median_of <<<"${rates[$design]}")")
    latency[$design]=$(median_of <<<"${latencies[$design]}")
done
ratio_worker=$(ratio "${rate[worker]}" "${rate[bare]}")
ratio_trigger=$(ratio "${rate[trigger]}" "${rate[bare]}")

echo
echo "append throughput left to the writers ($(nproc) cores, $CLIENTS clients, durable appends," \
    "medians of $ROUNDS round(s) of ${SECONDS_PER_RUN}s)"
row() { printf '  %-8s %-34s %8s events/s   latency %8s ms   %-12s (rounds: %s)\n' "$1" "$2" "$3" "$4" "$5" "${6% }"; }
row bare "appends only" "${rate[bare]}" "${latency[bare]}" "" "${rates[bare]}"
row worker "eventstore-worker, 2 projections" "${rate[worker]}" "${latency[worker]}" "$ratio_worker x bare" "${rates[worker]}"
row trigger "AFTER INSERT trigger, same SQL" "${rate[trigger]}" "${latency[trigger]}" "$ratio_trigger x bare" "${rates[trigger]}"
printf '  worker caught up %s s after each run ended; read models matched a fold of the events in every run\n' \
    "${CATCHUP[*]}"

record trigger.clients "$CLIENTS"
record trigger.seconds "$SECONDS_PER_RUN" s
record trigger.rounds "$ROUNDS"
record trigger.bare "${rate[bare]}" events/s
record trigger.worker "${rate[worker]}" events/s
record trigger.trigger "${rate[trigger]}" events/s
record trigger.ratio.worker "$ratio_worker"
record trigger.ratio.trigger "$ratio_trigger"
record trigger.latency.bare "${latency[bare]}" ms
record trigger.latency.worker "${latency[worker]}" ms
record trigger.latency.trigger "${latency[trigger]}" ms
