#!/usr/bin/env bash
# Read-your-writes latency: how long eventstore_worker.wait_for takes after an append, on a
# throwaway cluster. A benchmark: it prints figures, it does not pass or fail.
#
#   bash bench/wait_for.sh            # BENCH_SECONDS (default 20) at BENCH_RATE events/s
#   bash bench/wait_for.sh --quick    # 5 s smoke run (or BENCH_QUICK=1)
#
# Settings (environment):
#   BENCH_RATE     appends per second, one event each        (default 1000)
#   BENCH_SECONDS  duration of the loaded phase              (default 20; --quick: 5)
#   BENCH_CLIENTS  pgbench clients                           (default 40)
#   BENCH_INSTALL  1 = build and install the extension first (default: only when missing)
#
# 1. Under load: pgbench clients append one OrderPlaced per transaction (synchronous_commit
#    on) at BENCH_RATE in total; after each commit the same session takes pg_current_wal_lsn()
#    and calls wait_for('order_summary', token). The server records the time spent inside
#    wait_for; p50/p90/p99/max are reported. The worker keeps order_summary in the same
#    database (the default layout, where its own writes are WAL of the source too).
# 2. Barrier, no events: an unrelated write, then a token past the last event transaction,
#    confirmed by an idle position (docs/worker.md). (a) Calls at random moments, a pause of
#    0.2-1.2 s after each, for BENCH_SECONDS; (b) back to back for BENCH_SECONDS, where each
#    write follows the worker's previous idle write within milliseconds.
#
# Every figure printed is also recorded under wait_for.* (scripts/lib.sh `record`) for the
# report. EVENTSTORE_WORKER_BIN names a worker binary to use instead of building one.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../scripts/lib.sh
source "$HERE/../scripts/lib.sh"
PGBENCH=$PG_BIN/pgbench
PSQL=$PG_BIN/psql

bench_args "${BASH_SOURCE[0]}" "$@"
RATE=${BENCH_RATE:-1000}
CLIENTS=${BENCH_CLIENTS:-40}
if [ "$QUICK" = 1 ]; then SECS=${BENCH_SECONDS:-5}; else SECS=${BENCH_SECONDS:-20}; fi

ensure_extension
worker_binary
worker_bin=$WORKER_BIN

# --- a throwaway cluster, stopped and removed on exit (the worker first) ---------------------
bench_cluster pg_eventstore_wait_for_bench shared_buffers=256MB max_connections=100
worker_pid=""
trap '[ -n "$worker_pid" ] && kill -TERM "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null;
      stop_cluster "$DIR"; rm -rf "$DIR"' EXIT
sql() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -At -d app "$@"; }
"$PG_BIN/createdb" app
sql -f "$HERE/wait_for/setup.sql" >/dev/null

# order_summary from the example (the first projection), read models in the same database.
worker_config "$DIR/worker.toml" 1
RUST_LOG=${RUST_LOG:-warn} "$worker_bin" run --config "$DIR/worker.toml" >"$DIR/worker.log" 2>&1 &
worker_pid=$!
for _ in $(seq 300); do
    [ "$(sql -c "SELECT count(*) FROM pg_replication_slots WHERE active")" = 1 ] \
        && [ "$(sql -c "SELECT count(*) FROM pg_proc WHERE proname = 'wait_for'")" = 1 ] && break
    kill -0 "$worker_pid" 2>/dev/null || { cat "$DIR/worker.log"; die "the worker exited"; }
    sleep 0.1
done

pgbench_run() { # SCRIPT CLIENTS RATE
    "$PGBENCH" -n -h "$DIR" -p "$PORT" -U postgres -c "$2" -j 2 -R "$3" -T "$SECS" -f "$HERE/wait_for/$1" app \
        >"$DIR/pgbench-$1.log" 2>&1 || { cat "$DIR/pgbench-$1.log" >&2; tail -20 "$DIR/worker.log" >&2; die "pgbench $1 failed"; }
    grep -o 'tps = [0-9.]*' "$DIR/pgbench-$1.log" | head -1 | cut -d' ' -f3
}
percentiles() { # TABLE
    sql -F ' ' -c "SELECT count(*), count(*) FILTER (WHERE ms IS NULL),
        round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
        round(percentile_cont(0.9) WITHIN GROUP (ORDER BY ms)::numeric, 1),
        round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1),
        round(max(ms)::numeric, 1) FROM $1"
}

say "loaded: $RATE appends/s for ${SECS}s, $CLIENTS clients, each followed by wait_for"
tps=$(pgbench_run append_wait.pgbench "$CLIENTS" "$RATE")
read -r calls timeouts p50 p90 p99 pmax <<<"$(percentiles bench_wait)"
idle_before=$(sql -c "SELECT count(*) FROM eventstore.events")

say "barrier: unrelated writes only, random arrivals for ${SECS}s"
sleep 2 # let the last batch and its idle positions settle
end=$((SECONDS + SECS))
while [ $SECONDS -lt $end ]; do
    sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.2 + r / 32767 }')"
    sql -f "$HERE/wait_for/idle_wait.pgbench" >/dev/null
done
read -r icalls itimeouts ip50 ip90 _ ipmax <<<"$(percentiles bench_wait_idle)"
say "barrier: unrelated writes only, back to back for ${SECS}s"
sql -c "TRUNCATE bench_wait_idle"
"$PGBENCH" -n -h "$DIR" -p "$PORT" -U postgres -c 1 -T "$SECS" -f "$HERE/wait_for/idle_wait.pgbench" app \
    >"$DIR/pgbench-b2b.log" 2>&1 || { cat "$DIR/pgbench-b2b.log" >&2; die "pgbench back-to-back failed"; }
read -r bcalls btimeouts bp50 bp90 _ bpmax <<<"$(percentiles bench_wait_idle)"
[ "$(sql -c "SELECT count(*) FROM eventstore.events")" = "$idle_before" ] || die "events appeared during the idle phase"
rss_kb=$(awk '/VmHWM/ { print $2 }' "/proc/$worker_pid/status")

echo
echo "== machine"
echo "cpus:            $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
echo "load average:    $(cut -d' ' -f1-3 /proc/loadavg) (at the end)"
echo "postgresql:      $(sql -c 'SHOW server_version'), fsync on, synchronous_commit $(sql -c 'SHOW synchronous_commit')"
echo
echo "== wait_for after an append (order_summary in the same database)"
printf '%-28s %s appends/s achieved (target %s), %s clients, %ss\n' "load" "${tps%.*}" "$RATE" "$CLIENTS" "$SECS"
printf '%-28s %s (timed out: %s)\n' "calls" "$calls" "$timeouts"
printf '%-28s p50 %s ms   p90 %s ms   p99 %s ms   max %s ms\n' "wait_for latency" "$p50" "$p90" "$p99" "$pmax"
echo
echo "== barrier: wait_for with a token past the last event (no events, unrelated writes only)"
printf '%-28s %s calls (timed out: %s)   p50 %s ms   p90 %s ms   max %s ms\n' "random arrivals" "$icalls" "$itimeouts" "$ip50" "$ip90" "$ipmax"
printf '%-28s %s calls (timed out: %s)   p50 %s ms   p90 %s ms   max %s ms\n' "back to back" "$bcalls" "$btimeouts" "$bp50" "$bp90" "$bpmax"
printf '%-28s %s MiB\n' "worker peak RSS" "$((rss_kb / 1024))"

record wait_for.rate "$RATE" ev/s
record wait_for.clients "$CLIENTS"
record wait_for.seconds "$SECS" s
record wait_for.shared_buffers_mib "$(sql -c "SELECT pg_size_bytes(current_setting('shared_buffers')) / 1048576")" MiB
record wait_for.achieved "${tps%.*}" ev/s
record wait_for.calls "$calls"
record wait_for.timeouts "$timeouts"
record wait_for.p50 "$p50" ms
record wait_for.p90 "$p90" ms
record wait_for.p99 "$p99" ms
record wait_for.max "$pmax" ms
# barrier_record PHASE CALLS TIMEOUTS P50 P90 MAX
barrier_record() {
    record "wait_for.barrier.$1.calls" "$2"
    record "wait_for.barrier.$1.timeouts" "$3"
    record "wait_for.barrier.$1.p50" "$4" ms
    record "wait_for.barrier.$1.p90" "$5" ms
    record "wait_for.barrier.$1.max" "$6" ms
}
barrier_record random "$icalls" "$itimeouts" "$ip50" "$ip90" "$ipmax"
barrier_record back_to_back "$bcalls" "$btimeouts" "$bp50" "$bp90" "$bpmax"
record wait_for.rss_mib "$((rss_kb / 1024))" MiB
