#!/usr/bin/env bash
# eventstore-worker benchmark. Prints figures; no pass/fail.
#
#   1. drain: BENCH_EVENTS order events (default 100,000; --quick: 10,000) appended while the worker is stopped
#      (its slot exists); then the time to drain them into order_summary + customer_revenue,
#      compared with pg_recvlogical reading the same backlog from an identical slot to /dev/null.
#   2. lag: commit-to-visible lag p50/p99 at a steady BENCH_RATE events/s (default 2,000) for
#      BENCH_SECONDS (default 20): commit timestamp of the read-model row minus that of the event
#      (track_commit_timestamp=on).
#   3. peak RSS of the worker.
#
# Starts its own cluster (fsync on) and assumes the extension is installed
# (scripts/setup.sh / cargo pgrx install). CARGO_TARGET_DIR is honoured.
set -euo pipefail
# shellcheck source=../scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

QUICK=${BENCH_QUICK:-0}
for arg in "$@"; do
    case $arg in
        --quick) QUICK=1 ;;
        *) die "unknown argument: $arg (--quick is the only one)" ;;
    esac
done
if [ "$QUICK" = 1 ]; then
    EVENTS=${BENCH_EVENTS:-10000}; SECONDS_STEADY=${BENCH_SECONDS:-5}
else
    EVENTS=${BENCH_EVENTS:-100000}; SECONDS_STEADY=${BENCH_SECONDS:-20}
fi
RATE=${BENCH_RATE:-2000}
here=$REPO_ROOT/bench/worker

worker_binary
worker_bin=$WORKER_BIN

work=$(mktemp -d /tmp/es-worker-bench.XXXXXX)
port=$(free_port)
worker_pid=""
cleanup() {
    local rc=$?
    [ "$rc" = 0 ] || { echo "--- server log (tail)"; tail -30 "$work/server.log" 2>/dev/null; }
    [ -n "$worker_pid" ] && kill -TERM "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
    stop_cluster "$work"
    rm -rf "$work"
}
trap cleanup EXIT
start_cluster "$work" "$port" track_commit_timestamp=on shared_buffers=256MB max_wal_size=2GB
# Appends need not wait for fsync: what is measured is the worker, whose own target
# transactions always commit with synchronous_commit = on.
export PGOPTIONS="-c synchronous_commit=off"
psql_app() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$port" -U postgres -d app -At "$@"; }
"$PG_BIN/createdb" -h "$work" -p "$port" -U postgres app
psql_app -c "CREATE EXTENSION pg_eventstore" -c "CREATE SEQUENCE bench_orders" \
    -c "CREATE PUBLICATION eventstore_events FOR TABLE eventstore.events" \
    -c "SELECT 1 FROM pg_create_logical_replication_slot('eventstore_worker', 'pgoutput')" \
    -c "SELECT 1 FROM pg_create_logical_replication_slot('bench_recvlogical', 'pgoutput')" >/dev/null

# The two order projections of the example (everything before the third [[projection]]).
{
    printf '[source]\ndsn = "host=%s port=%s dbname=app user=postgres"\n\n' "$work" "$port"
    awk '/^\[\[projection\]\]/ { n++ } n >= 1 && n <= 2' "$REPO_ROOT/examples/orders-worker.toml"
} >"$work/worker.toml"
"$worker_bin" check --config "$work/worker.toml" >/dev/null

# A first start builds projections from the stored events instead of draining the slot
# (bench/catchup.sh measures that): start the worker once on the empty store, so the
# projections exist and follow the stream, then stop it before the backlog is written.
say "starting the worker once on the empty store"
"$worker_bin" run --config "$work/worker.toml" >"$work/worker-init.log" 2>&1 &
worker_pid=$!
until [ "$(psql_app -c "SELECT count(*) FROM eventstore_worker.projections WHERE status = 'running'" 2>/dev/null || echo 0)" = 2 ]; do
    kill -0 "$worker_pid" 2>/dev/null || { tail -20 "$work/worker-init.log"; die "the worker exited"; }
    sleep 0.05
done
kill -TERM "$worker_pid"; wait "$worker_pid" || true; worker_pid=""

clients=4
per_client=$(( (EVENTS + 3 * clients - 1) / (3 * clients) ))
orders=$((per_client * clients))
say "appending $((orders * 3)) events ($orders orders, $clients clients) with the worker stopped"
t0=$(date +%s.%N)
"$PG_BIN/pgbench" -n -h "$work" -p "$port" -U postgres -c $clients -j 2 -t $per_client \
    -f "$here/orders.pgbench" app >"$work/pgbench-load.log" 2>&1 || { cat "$work/pgbench-load.log"; die "pgbench failed"; }
t1=$(date +%s.%N)
total=$(psql_app -c "SELECT count(*) FROM eventstore.events")
end_lsn=$(psql_app -c "SELECT pg_current_wal_insert_lsn()")
append_rate=$(echo "$total / ($t1 - $t0)" | bc)

say "pg_recvlogical: draining the backlog from slot bench_recvlogical to /dev/null"
t0=$(date +%s.%N)
"$PG_BIN/pg_recvlogical" -h "$work" -p "$port" -U postgres -d app -S bench_recvlogical --start --no-loop \
    -o proto_version=1 -o publication_names=eventstore_events --endpos="$end_lsn" -f /dev/null
t1=$(date +%s.%N)
recv_rate=$(echo "$total / ($t1 - $t0)" | bc)

say "eventstore-worker: draining the same backlog into order_summary + customer_revenue"
t0=$(date +%s.%N)
RUST_LOG=${RUST_LOG:-info} "$worker_bin" run --config "$work/worker.toml" >"$work/worker.log" 2>&1 &
worker_pid=$!
# order_summary handles every event type of the load, so its count reaches the total.
until [ "$(psql_app -c "SELECT coalesce(sum(events_applied), 0) FROM eventstore_worker.projections WHERE name = 'order_summary'" 2>/dev/null || echo 0)" -ge "$total" ]; do
    kill -0 "$worker_pid" 2>/dev/null || { tail -20 "$work/worker.log"; die "the worker exited"; }
    sleep 0.05
done
t1=$(date +%s.%N)
worker_rate=$(echo "$total / ($t1 - $t0)" | bc)
# Correctness of the drained read model, cheaply: one row per order, every order shipped.
shipped=$(psql_app -c "SELECT count(*) FROM order_summary WHERE status = 'shipped' AND event_count = 3")

say "steady load: $RATE events/s for ${SECONDS_STEADY}s with the worker running"
"$PG_BIN/pgbench" -n -h "$work" -p "$port" -U postgres -c 4 -j 2 -R "$RATE" -T "$SECONDS_STEADY" \
    -f "$here/steady.pgbench" app >"$work/pgbench-steady.log" 2>&1 || { cat "$work/pgbench-steady.log"; die "pgbench failed"; }
steady_events=$(psql_app -c "SELECT count(*) FROM eventstore.events WHERE stream_id LIKE 'lag-%'")
until [ "$(psql_app -c "SELECT count(*) FROM order_summary WHERE order_id LIKE 'lag-%'")" -ge "$steady_events" ]; do
    kill -0 "$worker_pid" 2>/dev/null || { tail -20 "$work/worker.log"; die "the worker exited"; }
    sleep 0.1
done
lag=$(psql_app -F ' ' -c "
    WITH l AS (
        SELECT extract(epoch FROM pg_xact_commit_timestamp(o.xmin) - pg_xact_commit_timestamp(e.xmin)) * 1000 AS ms
          FROM order_summary o JOIN eventstore.events e ON e.global_position = o.last_position
         WHERE o.order_id LIKE 'lag-%')
    SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1),
           round(max(ms)::numeric, 1) FROM l")
read -r p50 p99 pmax <<<"$lag"
steady_rate=$(grep -o 'tps = [0-9.]*' "$work/pgbench-steady.log" | head -1 | cut -d' ' -f3)
rss_kb=$(awk '/VmHWM/ { print $2 }' "/proc/$worker_pid/status")

echo
echo "eventstore-worker benchmark ($(nproc) cores)"
printf '  backlog                      %s events (appended at %s events/s)\n' "$total" "$append_rate"
printf '  pg_recvlogical -> /dev/null  %s events/s\n' "$recv_rate"
printf '  worker -> 2 projections      %s events/s   (%s of %s orders fully applied)\n' "$worker_rate" "$shipped" "$orders"
printf '  ratio worker/pg_recvlogical  %s   (target >= 0.7)\n' "$(echo "scale=2; $worker_rate / $recv_rate" | bc)"
printf '  steady load                  %s events/s for %ss (%s events)\n' "${steady_rate%.*}" "$SECONDS_STEADY" "$steady_events"
printf '  commit-to-visible lag        p50 %s ms   p99 %s ms   max %s ms   (target p99 < 100 ms)\n' "$p50" "$p99" "$pmax"
printf '  worker peak RSS              %s MiB\n' "$((rss_kb / 1024))"
