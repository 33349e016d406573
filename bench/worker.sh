#!/usr/bin/env bash
# eventstore-worker benchmark: how fast the worker drains a backlog next to pg_recvlogical, the
# CPU it spends per event, and how far behind it runs under steady load. A benchmark: it prints
# and records figures, it does not pass or fail.
#
#   bash bench/worker.sh            # full: 3 drain rounds of 100,000 events, 20 s per rate
#   bash bench/worker.sh --quick    # smoke run (or BENCH_QUICK=1): 1 round of 10,000, 5 s per rate
#
# Settings (environment):
#   BENCH_EVENTS   order events appended per drain round, 3 per order  (default 100000; --quick: 10000)
#   BENCH_ROUNDS   drain rounds; medians reported                      (default 3; --quick: 1)
#   BENCH_RATES    steady rates, events/s                              (default "500 2000 8000")
#   BENCH_SECONDS  seconds of load per rate                            (default 20; --quick: 5)
#   BENCH_RESULTS  file the figures are appended to, one key per line (scripts/lib.sh record)
#   EVENTSTORE_WORKER_BIN  worker binary to run instead of building one (CARGO_TARGET_DIR honoured)
#
#   drain  each round appends a fresh backlog while the worker is stopped (its slot and a second
#          one, bench_recvlogical, both exist), then times both readers of it, alternating which
#          goes first: pg_recvlogical from bench_recvlogical to /dev/null up to the LSN at the end
#          of the append, and the worker from process start until order_summary and
#          customer_revenue (the order projections of examples/orders-worker.toml) have applied
#          it. Events/s per side and round, the medians and their ratio (target >= 0.7). Every
#          order of the round must end up shipped in order_summary.
#   floor  after the drains, per round: the two projections' handlers run over the round's
#          events by one backend (bench/worker/floor.py), envelopes prepared beforehand; alone,
#          and beside pg_recvlogical reading the same backlog from a third slot, starting when
#          pg_recvlogical receives the backlog's first transaction. The second is an ideal
#          reader's drain, and its rate over pg_recvlogical's the highest ratio this machine
#          allows (the ceiling); the worker's rate is also given as a share of it.
#   cpu    user + system time of the worker process (/proc/PID/stat) per 1,000 events: over each
#          drain (median of the rounds) and at each rate, from the start of the load until the
#          worker has caught up.
#   lag    per rate, pgbench appends durably at that rate (one event per transaction up to 2,000/s,
#          1,000 transactions/s of several events above, each on its own stream), with the worker
#          running; commit-to-visible lag p50/p99/max over that rate's own rows: commit time of
#          the read-model row minus that of the event (track_commit_timestamp=on). Target p99 <
#          100 ms at 2,000 events/s. The rate pgbench achieved is reported beside the requested
#          one: on a small machine the highest may be out of reach, and that is a result too.
#   rss    the worker's peak resident set (VmHWM), highest over its runs.
#
# Starts its own cluster (fsync on) and assumes the extension is installed
# (scripts/setup.sh / cargo pgrx install).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../scripts/lib.sh
source "$HERE/../scripts/lib.sh"

bench_args "${BASH_SOURCE[0]}" "$@"
if [ "$QUICK" = 1 ]; then
    EVENTS=${BENCH_EVENTS:-10000}; ROUNDS=${BENCH_ROUNDS:-1}; SECONDS_STEADY=${BENCH_SECONDS:-5}
else
    EVENTS=${BENCH_EVENTS:-100000}; ROUNDS=${BENCH_ROUNDS:-3}; SECONDS_STEADY=${BENCH_SECONDS:-20}
fi
RATES=${BENCH_RATES:-500 2000 8000}
# shellcheck disable=SC2086 # RATES is a list, split on purpose
for n in "$EVENTS" "$ROUNDS" "$SECONDS_STEADY" $RATES; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "not a positive whole number: $n"
done
# Each rate's rows are told apart by a prefix named after the rate.
# shellcheck disable=SC2086
[ "$(printf '%s\n' $RATES | sort | uniq -d)" = "" ] || die "BENCH_RATES names a rate twice: $RATES"

worker_binary
CLK_TCK=$(getconf CLK_TCK)

bench_cluster pg_eventstore_worker_bench track_commit_timestamp=on shared_buffers=256MB max_wal_size=2GB
worker_pid=""
cleanup() {
    local rc=$?
    if [ "$rc" != 0 ]; then echo "--- server log (tail)"; tail -30 "$DIR/server.log" 2>/dev/null || true; fi >&2
    if [ -n "$worker_pid" ]; then kill -TERM "$worker_pid" 2>/dev/null || true; wait "$worker_pid" 2>/dev/null || true; fi
    if [ -n "${POLLER_PID:-}" ]; then kill "$POLLER_PID" 2>/dev/null || true; fi
    stop_cluster "$DIR"
    rm -rf "$DIR"
}
trap cleanup EXIT
# The backlog's appends need not wait for fsync: what the drain measures is the worker, whose
# own target transactions always commit with synchronous_commit = on. The steady load commits
# durably, as applications do (see below).
export PGOPTIONS="-c synchronous_commit=off"
sql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -At -d app "$@"; }
now() { date +%s.%N; }
"$PG_BIN/createdb" app
sql -c "CREATE EXTENSION pg_eventstore" -c "CREATE SEQUENCE bench_orders" \
    -c "CREATE PUBLICATION eventstore_events FOR TABLE eventstore.events" \
    -c "SELECT 1 FROM pg_create_logical_replication_slot('eventstore_worker', 'pgoutput')" \
    -c "SELECT 1 FROM pg_create_logical_replication_slot('bench_recvlogical', 'pgoutput')" \
    -c "SELECT 1 FROM pg_create_logical_replication_slot('bench_ceiling', 'pgoutput')" >/dev/null

# The two order projections of the example (everything before the third [[projection]]).
worker_config "$DIR/worker.toml" 2

# --- the worker process --------------------------------------------------------------------
rss_peak_kb=0
start_worker() {
    worker_log=$DIR/$1.log
    RUST_LOG=${RUST_LOG:-info} "$WORKER_BIN" run --config "$DIR/worker.toml" >"$worker_log" 2>&1 &
    worker_pid=$!
}
# Every run of the worker is a process of its own, so the peak is taken over all of them.
stop_worker() {
    local kb
    kb=$(awk '/^VmHWM/ { print $2 }' "/proc/$worker_pid/status")
    if [ "$kb" -gt "$rss_peak_kb" ]; then rss_peak_kb=$kb; fi
    kill -TERM "$worker_pid"
    wait "$worker_pid" || true
    worker_pid=""
}
worker_alive() { kill -0 "$worker_pid" 2>/dev/null || { tail -20 "$worker_log" >&2; die "the worker exited"; }; }
# CPU time (user + system, all threads) the worker has used so far, in ms.
worker_cpu_ms() {
    local stat fields
    stat=$(<"/proc/$worker_pid/stat")
    # The command name, in parentheses, may hold spaces: count fields after it (utime is the
    # 14th field of the line, the 12th after the name).
    read -r -a fields <<<"${stat##*) }"
    echo $(( (fields[11] + fields[12]) * 1000 / CLK_TCK ))
}
# wait_applied N: until order_summary, which handles every event type written here, has
# applied N events in all (events_applied is kept across the worker's runs).
#
# One psql session (a coprocess) serves every poll, one autocommit statement each: a psql
# started per poll costs about 15 ms of CPU with its backend, some 60 per drain, a core-second
# taken from the two cores the drain shares. Autocommit statements hold no snapshot between
# polls, so the read models' dead row versions can be pruned while the worker writes them.
wait_applied() {
    local deadline=$((SECONDS + 600)) applied
    [ -n "${POLLER_PID:-}" ] || coproc POLLER { exec "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d app 2>&1; }
    while :; do
        echo "SELECT coalesce(sum(events_applied), 0) FROM eventstore_worker.projections WHERE name = 'order_summary';" >&"${POLLER[1]}"
        IFS= read -r -t 60 applied <&"${POLLER[0]}" || die "the polling psql session ended or did not answer"
        [[ $applied =~ ^[0-9]+$ ]] || die "polling failed: $applied"
        [ "$applied" -ge "$1" ] && return 0
        worker_alive
        [ "$SECONDS" -lt "$deadline" ] || die "the worker has applied $applied of $1 events after 10 minutes"
        sleep 0.02
    done
}
# ms_per_1k MS EVENTS: CPU ms per 1,000 events.
ms_per_1k() { awk -v ms="$1" -v n="$2" 'BEGIN { printf "%.1f", ms * 1000 / n }'; }

# A first start builds projections from the stored events instead of draining the slot
# (bench/catchup.sh measures that): start the worker once on the empty store, so the
# projections exist and follow the stream, then stop it before any backlog is written.
say "starting the worker once on the empty store"
start_worker worker-init
until [ "$(sql -c "SELECT count(*) FROM eventstore_worker.projections WHERE status = 'running'" 2>/dev/null || echo 0)" = 2 ]; do
    worker_alive
    sleep 0.05
done
stop_worker

# --- drain: alternating rounds ---------------------------------------------------------------
clients=4
per_client=$(( (EVENTS + 3 * clients - 1) / (3 * clients) ))
orders=$((per_client * clients))
round_events=$((orders * 3))
total=0
recv_rates=() worker_rates=() append_rates=() drain_cpu=() first_side=()
round_last=("$(sql -c "SELECT coalesce(max(global_position), 0) FROM eventstore.events")") round_end_lsn=()

# recvlogical SLOT END_LSN [FILE]: reads the publication from SLOT up to END_LSN, to FILE
# (default /dev/null; - is stdout).
recvlogical() {
    "$PG_BIN/pg_recvlogical" -d app -S "$1" --start --no-loop \
        -o proto_version=1 -o publication_names=eventstore_events --endpos="$2" -f "${3:-/dev/null}"
}
# fully_shipped DB PREFIX: orders of PREFIX in DB's order_summary with all 3 events applied.
fully_shipped() {
    "$PG_BIN/psql" -X -At -d "$1" \
        -c "SELECT count(*) FROM order_summary WHERE order_id LIKE '$2%' AND status = 'shipped' AND event_count = 3"
}

drain_recvlogical() {
    local t0 t1
    say "round $round: pg_recvlogical draining the backlog from slot bench_recvlogical to /dev/null"
    t0=$(now)
    recvlogical bench_recvlogical "$end_lsn"
    t1=$(now)
    recv_rates+=("$(per_second "$round_events" "$t0" "$t1")")
    # The next round must start where this one ended, or it would read this backlog again.
    [ "$(sql -c "SELECT confirmed_flush_lsn >= '$end_lsn' FROM pg_replication_slots WHERE slot_name = 'bench_recvlogical'")" = t ] \
        || die "round $round: pg_recvlogical did not confirm up to $end_lsn"
}
drain_worker() {
    local t0 t1
    say "round $round: eventstore-worker draining the backlog into order_summary + customer_revenue"
    t0=$(now)
    # A fresh process: its CPU time so far is the drain's, start-up included like the time.
    start_worker "worker-drain$round"
    wait_applied "$total"
    t1=$(now)
    drain_cpu+=("$(ms_per_1k "$(worker_cpu_ms)" "$round_events")")
    stop_worker
    worker_rates+=("$(per_second "$round_events" "$t0" "$t1")")
}

for ((round = 1; round <= ROUNDS; round++)); do
    prefix=d$round-
    say "round $round/$ROUNDS: appending $round_events events ($orders orders, $clients clients) with the worker stopped"
    t0=$(now)
    "$PG_BIN/pgbench" -n -c $clients -j 2 -t $per_client -D prefix="$prefix" -f "$HERE/worker/orders.pgbench" app \
        >"$DIR/pgbench-drain$round.log" 2>&1 || { cat "$DIR/pgbench-drain$round.log"; die "pgbench failed"; }
    t1=$(now)
    append_rates+=("$(per_second "$round_events" "$t0" "$t1")")
    total=$(sql -c "SELECT count(*) FROM eventstore.events")
    [ "$total" = $((round * round_events)) ] || die "round $round: $total events stored, expected $((round * round_events))"
    round_last+=("$(sql -c "SELECT max(global_position) FROM eventstore.events")")
    end_lsn=$(sql -c "SELECT pg_current_wal_insert_lsn()")
    round_end_lsn+=("$end_lsn")
    # Alternate which reader goes first, so neither always finds the backlog warmer in cache.
    if ((round % 2)); then
        first_side+=(recvlogical); drain_recvlogical; drain_worker
    else
        first_side+=(worker); drain_worker; drain_recvlogical
    fi
    # Correctness of this round's read model, cheaply: one row per order, every order shipped.
    shipped=$(fully_shipped app "$prefix")
    [ "$shipped" = "$orders" ] || die "round $round: $shipped of $orders orders fully applied"
done
# --- drain: the handler floor and the ceiling of the ratio -----------------------------------
# The two projections' handlers alone, run by one backend over each round's events with the
# envelopes prepared beforehand (bench/worker/floor.py): work the target backend of a drain
# cannot do with less, since every handler runs once per event. Run twice per round: alone,
# and at the same time as pg_recvlogical reads the round's backlog from a slot of its own
# (bench_ceiling), until both are done; the handlers start when pg_recvlogical receives the
# backlog's first transaction, since no reader can apply an event before that. The second is
# the drain of an ideal reader: the walsender's decoding and a client process as cheap as
# pg_recvlogical, the handlers' work in the target, perfectly overlapped, and nothing else (no
# envelopes to parse, no commit-order map, no checkpoints, no read-model writes in the decoded
# database). Its rate over
# pg_recvlogical's is the highest ratio this machine allows. Each run in a database of its
# own (whose tables grow over the rounds as the worker's do), after the drains, so that no
# reader of the app database decodes its writes.
floor_rates=() ceiling_rates=() lead_ms=()
for db in bench_floor bench_ceiling; do
    "$PG_BIN/createdb" $db
    python3 "$HERE/worker/floor.py" "$DIR/worker.toml" | "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null
done
# floor_run DB FIRST LAST: applies the prepared envelopes FIRST..LAST, durably, one transaction
# per chunk of about a drain batch's size (as the worker commits).
floor_run() {
    PGOPTIONS="-c synchronous_commit=on" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$1" -c "CALL apply_range($2, $3, 5000)"
}
for ((round = 1; round <= ROUNDS; round++)); do
    first=$((round_last[round - 1] + 1)) last=${round_last[round]}
    prefix=d$round-
    say "round $round: the handler floor, alone and beside pg_recvlogical"
    for db in bench_floor bench_ceiling; do
        # The envelope the worker builds, as jsonb (its keys, its recorded_at form).
        sql -c "COPY (SELECT global_position, jsonb_build_object('data', data, 'type', event_type, 'event_id', event_id,
                             'metadata', metadata, 'stream_id', stream_id, 'recorded_at', recorded_at,
                             'stream_version', stream_version, 'global_position', global_position)
                        FROM eventstore.events WHERE global_position BETWEEN $first AND $last) TO STDOUT" |
            "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d $db -c "COPY envelopes FROM STDIN"
    done
    t0=$(now)
    floor_run bench_floor "$first" "$last"
    t1=$(now)
    floor_rates+=("$(per_second "$round_events" "$t0" "$t1")")
    # The ideal reader cannot apply an event before the walsender has delivered it, and before
    # the backlog the walsender must pass the WAL written since the last one (the previous
    # round's drain wrote its read models there) without sending anything: the floor starts at
    # pg_recvlogical's first byte of output.
    rm -f "$DIR/first-byte"; mkfifo "$DIR/first-byte"
    t0=$(now)
    recvlogical bench_ceiling "${round_end_lsn[round - 1]}" - |
        { head -c 1 >/dev/null; echo >"$DIR/first-byte"; cat >/dev/null; } &
    recv_pid=$!
    read -r <"$DIR/first-byte"
    ts=$(now)
    floor_run bench_ceiling "$first" "$last"
    wait "$recv_pid" || die "round $round: pg_recvlogical beside the floor failed"
    t1=$(now)
    [ "$(sql -c "SELECT confirmed_flush_lsn >= '${round_end_lsn[round - 1]}' FROM pg_replication_slots WHERE slot_name = 'bench_ceiling'")" = t ] \
        || die "round $round: pg_recvlogical beside the floor did not confirm up to ${round_end_lsn[round - 1]}"
    ceiling_rates+=("$(per_second "$round_events" "$t0" "$t1")")
    lead_ms+=("$(awk -v a="$t0" -v b="$ts" 'BEGIN { printf "%.0f", (b - a) * 1000 }')")
    for db in bench_floor bench_ceiling; do
        shipped=$(fully_shipped $db "$prefix")
        [ "$shipped" = "$orders" ] || die "round $round: the floor in $db applied $shipped of $orders orders fully"
    done
done
sql -c "SELECT pg_drop_replication_slot('bench_ceiling')" >/dev/null

# No reader is left on this slot: dropped, it holds no WAL back during the steady load.
sql -c "SELECT pg_drop_replication_slot('bench_recvlogical')" >/dev/null

recv_median=$(printf '%s\n' "${recv_rates[@]}" | median | xargs printf '%.0f')
worker_median=$(printf '%s\n' "${worker_rates[@]}" | median | xargs printf '%.0f')
drain_ratio=$(ratio "$worker_median" "$recv_median")
drain_cpu_median=$(printf '%s\n' "${drain_cpu[@]}" | median | xargs printf '%.1f')
floor_median=$(printf '%s\n' "${floor_rates[@]}" | median | xargs printf '%.0f')
floor_ratio=$(ratio "$floor_median" "$recv_median")
ceiling_median=$(printf '%s\n' "${ceiling_rates[@]}" | median | xargs printf '%.0f')
drain_ceiling=$(ratio "$ceiling_median" "$recv_median")
of_ceiling=$(ratio "$worker_median" "$ceiling_median")
lead_median=$(printf '%s\n' "${lead_ms[@]}" | median | xargs printf '%.0f')

# --- steady load at each rate ----------------------------------------------------------------
say "starting the worker for the steady load"
start_worker worker-steady
# Until it streams, so that its start-up is not counted as lag of the first rate.
until [ "$(sql -c "SELECT active FROM pg_replication_slots WHERE slot_name = 'eventstore_worker'")" = t ]; do
    worker_alive
    sleep 0.05
done
# Durable appends from here on: with asynchronous commits the walsender may send an event
# only once the WAL writer has flushed it (every wal_writer_delay, 200 ms), which at low rates
# is most of the measured lag and no part of the worker's.
export PGOPTIONS="-c synchronous_commit=on"
# A short unmeasured load first: the worker's first batches after a start compile its apply
# functions and fill the server's caches, which is start-up, not steady-state lag.
"$PG_BIN/pgbench" -n -c 2 -j 2 -R 500 -T 3 -D prefix=warmup- -D k=1 -f "$HERE/worker/steady.pgbench" app \
    >"$DIR/pgbench-warmup.log" 2>&1 || { cat "$DIR/pgbench-warmup.log"; die "pgbench failed"; }
total=$(sql -c "SELECT count(*) FROM eventstore.events")
wait_applied "$total"
declare -A achieved p50 p99 pmax steady_cpu steady_events per_txn
for rate in $RATES; do
    # Up to 2,000 events/s one event per transaction; above, 1,000 transactions/s of several
    # events (each on its own stream): two cores do not run many more single-event
    # transactions beside the worker and pgbench. About one client per 250 transactions/s, so
    # that a client's durable commit does not cap the rate.
    k=1; [ "$rate" -le 2000 ] || k=$(( (rate + 999) / 1000 )); tps=$(( rate / k ))
    c=$(( (tps + 249) / 250 )); c=$(( c < 2 ? 2 : c > 8 ? 8 : c ))
    per_txn[$rate]=$k
    say "steady load: $rate events/s ($tps transactions/s of $k events) for ${SECONDS_STEADY}s ($c clients) with the worker running"
    before=$total
    cpu0=$(worker_cpu_ms)
    "$PG_BIN/pgbench" -n -c "$c" -j 2 -R "$tps" -T "$SECONDS_STEADY" -D prefix="lag$rate-" -D k="$k" -f "$HERE/worker/steady.pgbench" app \
        >"$DIR/pgbench-steady$rate.log" 2>&1 || { cat "$DIR/pgbench-steady$rate.log"; die "pgbench failed"; }
    total=$(sql -c "SELECT count(*) FROM eventstore.events")
    wait_applied "$total"
    cpu1=$(worker_cpu_ms)
    n=$((total - before))
    steady_events[$rate]=$n
    steady_cpu[$rate]=$(ms_per_1k $((cpu1 - cpu0)) "$n")
    achieved[$rate]=$(grep -o 'tps = [0-9.]*' "$DIR/pgbench-steady$rate.log" | head -1 | cut -d' ' -f3 | awk -v k="$k" '{ printf "%.0f", $1 * k }')
    lag=$(sql -F ' ' -c "
        WITH l AS (
            SELECT extract(epoch FROM pg_xact_commit_timestamp(o.xmin) - pg_xact_commit_timestamp(e.xmin)) * 1000 AS ms
              FROM order_summary o JOIN eventstore.events e ON e.global_position = o.last_position
             WHERE o.order_id LIKE 'lag$rate-%')
        SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
               round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1),
               round(max(ms)::numeric, 1) FROM l")
    read -r l50 l99 lmax <<<"$lag"
    [ -n "$lmax" ] || die "no lag measured at $rate events/s"
    p50[$rate]=$l50 p99[$rate]=$l99 pmax[$rate]=$lmax
done
stop_worker
rss_mib=$(awk -v kb="$rss_peak_kb" 'BEGIN { printf "%.1f", kb / 1024 }')

# --- report ----------------------------------------------------------------------------------
record worker.drain.events "$round_events" events
record worker.drain.rounds "$ROUNDS"
record worker.drain.recvlogical "$recv_median" events/s
record worker.drain.worker "$worker_median" events/s
record worker.drain.ratio "$drain_ratio"
record worker.drain.floor "$floor_median" events/s
record worker.drain.floor_ratio "$floor_ratio"
record worker.drain.ceiling_rate "$ceiling_median" events/s
record worker.drain.ceiling "$drain_ceiling"
record worker.drain.of_ceiling "$of_ceiling"
record worker.drain.lead_ms "$lead_median" ms
record worker.cpu.drain "$drain_cpu_median" "ms/1000 events"
for rate in $RATES; do
    record "worker.lag.$rate.rate" "$rate" events/s
    record "worker.lag.$rate.achieved" "${achieved[$rate]}" events/s
    record "worker.lag.$rate.per_txn" "${per_txn[$rate]}" events/transaction
    record "worker.lag.$rate.p50" "${p50[$rate]}" ms
    record "worker.lag.$rate.p99" "${p99[$rate]}" ms
    record "worker.lag.$rate.max" "${pmax[$rate]}" ms
    record "worker.cpu.steady.$rate" "${steady_cpu[$rate]}" "ms/1000 events"
done
record worker.rss_mib "$rss_mib" MiB

echo
echo "eventstore-worker benchmark ($(nproc) cores)"
printf '  drain: %s events per round, %s round(s), readers alternating\n' "$round_events" "$ROUNDS"
printf '    %-7s %-12s %12s %15s %12s %15s\n' round first appended recvlogical worker "worker CPU"
for ((i = 0; i < ROUNDS; i++)); do
    printf '    %-7s %-12s %8s ev/s %11s ev/s %8s ev/s %6s ms/1k ev\n' $((i + 1)) "${first_side[i]}" \
        "${append_rates[i]}" "${recv_rates[i]}" "${worker_rates[i]}" "${drain_cpu[i]}"
done
printf '  pg_recvlogical -> /dev/null  %s events/s (median)\n' "$recv_median"
printf '  worker -> 2 projections      %s events/s (median; every order of every round fully applied)\n' "$worker_median"
printf '  ratio worker/pg_recvlogical  %s   (target >= 0.7)\n' "$drain_ratio"
printf '  worker CPU while draining    %s ms per 1,000 events (median)\n' "$drain_cpu_median"
printf '  handler floor, alone         %s events/s (median; rounds: %s)\n' "$floor_median" "${floor_rates[*]}"
printf '  WAL before the backlog       %s ms for the walsender to pass (median; rounds: %s)\n' "$lead_median" "${lead_ms[*]}"
printf '  ideal reader                 %s events/s (median; rounds: %s): that, then the floor beside pg_recvlogical\n' "$ceiling_median" "${ceiling_rates[*]}"
printf '  ceiling of the ratio here    %s   (ideal reader / pg_recvlogical alone)\n' "$drain_ceiling"
printf '  worker / ceiling             %s\n' "$of_ceiling"
printf '  steady load, %ss per rate; commit-to-visible lag (target p99 < 100 ms at 2,000 events/s)\n' "$SECONDS_STEADY"
printf '    %9s %9s %7s %8s %10s %10s %10s %16s\n' requested achieved ev/txn events p50 p99 max "worker CPU"
for rate in $RATES; do
    printf '    %4s ev/s %4s ev/s %7s %8s %7s ms %7s ms %7s ms %6s ms/1k ev\n' "$rate" "${achieved[$rate]}" "${per_txn[$rate]}" "${steady_events[$rate]}" \
        "${p50[$rate]}" "${p99[$rate]}" "${pmax[$rate]}" "${steady_cpu[$rate]}"
done
printf '  worker peak RSS              %s MiB\n' "$rss_mib"
