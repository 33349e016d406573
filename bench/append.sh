#!/usr/bin/env bash
# Append throughput of pg_eventstore against the physical floor (a raw INSERT of the same rows
# into a table with the same columns, defaults and unique indexes), measured with pgbench on a
# throwaway cluster. A benchmark: it prints figures, it does not pass or fail.
#
#   bash bench/append.sh            # full: BENCH_ROUNDS x BENCH_SECONDS per side and workload
#   bash bench/append.sh --quick    # smoke run of a few seconds (or BENCH_QUICK=1)
#
# Settings (environment):
#   BENCH_SECONDS  seconds per pgbench run            (default 20; --quick: 2)
#   BENCH_ROUNDS   alternated ours/raw pairs; median   (default 3;  --quick: 1)
#   BENCH_CLIENTS  pgbench -c                           (default 8)
#   BENCH_JOBS     pgbench -j                           (default: nproc)
#   BENCH_ASYNC    1 = also measure with synchronous_commit=off on both sides (default 1)
#   BENCH_SCALING  client counts for the single-event scaling series (default "1 4 8 16";
#                  --quick: "1 8"; empty to skip), BENCH_SCALING_SECONDS per run (default 10)
#   BENCH_HOT      1 = also measure hot-stream contention: all clients on 10 streams, each
#                  append with the version just read as expected version (default 1)
#   BENCH_BREAKDOWN 1 = also measure, to split the gap, raw inserts into a copy of the floor
#                  table with the two paging indexes of eventstore.events, and append's work
#                  as one plain SQL statement; in the synchronous_commit=off runs, where the
#                  work is CPU-bound and the API's own cost shows (default 1)
#   BENCH_INSTALL  1 = build and install the extension first (default: only when missing)
#
# Every figure printed is also recorded under append.* (scripts/lib.sh `record`) for the report.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../scripts/lib.sh
source "$HERE/../scripts/lib.sh"
SCRIPTS=$HERE/append
PGBENCH=$PG_BIN/pgbench
PSQL=$PG_BIN/psql

bench_args "${BASH_SOURCE[0]}" "$@"
if [ "$QUICK" = 1 ]; then
    SECONDS_PER_RUN=${BENCH_SECONDS:-2}; ROUNDS=${BENCH_ROUNDS:-1}
else
    SECONDS_PER_RUN=${BENCH_SECONDS:-20}; ROUNDS=${BENCH_ROUNDS:-3}
fi
CLIENTS=${BENCH_CLIENTS:-8}
JOBS=${BENCH_JOBS:-$(nproc)}
[ "$JOBS" -gt "$CLIENTS" ] && JOBS=$CLIENTS
ASYNC=${BENCH_ASYNC:-1}
if [ "$QUICK" = 1 ]; then SCALING=${BENCH_SCALING-1 8}; else SCALING=${BENCH_SCALING-1 4 8 16}; fi
SCALING_SECONDS=${BENCH_SCALING_SECONDS:-$([ "$QUICK" = 1 ] && echo 2 || echo 10)}
HOT=${BENCH_HOT:-1}
BREAKDOWN=${BENCH_BREAKDOWN:-1}

# --- the extension must be installed (build it only when it is missing) ----------------------
ensure_extension

# --- a throwaway cluster, stopped and removed on exit ---------------------------------------
bench_cluster pg_eventstore_bench
sql() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -At "$@"; }

sql -c "CREATE EXTENSION pg_eventstore" >/dev/null
sql -f "$SCRIPTS/schema.sql" >/dev/null
# Sanity: each script runs once and writes what it should.
for s in single_ours single_raw batch_ours batch_raw single_raw_idx batch_raw_idx single_sql batch_sql \
         single_plpgsql batch_plpgsql hot_ours hot_plpgsql zipf_ours zipf_plpgsql tiny_ours tiny_raw tiny_plpgsql \
         single_invoker; do
    "$PGBENCH" -n -M prepared -t 1 -f "$SCRIPTS/$s.sql" >/dev/null 2>"$DIR/check.log" \
        || { cat "$DIR/check.log"; die "bench/append/$s.sql failed"; }
done
[ "$(sql -c "SELECT count(*) FROM eventstore.events")" = 105 ] || die "API appends wrote no 105 events"
[ "$(sql -c "SELECT count(*) FROM bench.events")" = 102 ] || die "raw inserts wrote no 102 rows"
[ "$(sql -c "SELECT count(*) FROM bench.events_idx")" = 202 ] || die "breakdown inserts wrote no 202 rows"
[ "$(sql -c "SELECT count(*) FROM bench.pl_events")" = 104 ] || die "PL/pgSQL appends wrote no 104 events"

# --- machine facts --------------------------------------------------------------------------
setting() { sql -c "SHOW $1"; }
echo "== machine"
echo "cpus:               $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
echo "memory:             $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "kernel:             $(uname -sr)"
echo "load average:       $(cut -d' ' -f1-3 /proc/loadavg) (at start)"
echo "postgresql:         $(sql -c 'SHOW server_version') ($($PGBENCH --version))"
SO=$("$PG_CONFIG" --pkglibdir)/pg_eventstore.so
so_facts() {
    local kind=release
    # Debug builds keep Rust's debug assertions (precondition checks) and are several times slower.
    if nm "$SO" 2>/dev/null | grep -q precondition_check; then kind="DEBUG build (debug assertions on)"; fi
    echo "$(sha256sum "$SO" | cut -c1-12), $(du -h "$SO" | cut -f1), $(date -r "$SO" '+%F %T'), $kind"
}
SO_AT_START=$(so_facts)
echo "pg_eventstore:      $(sql -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_eventstore'") ($SO: $SO_AT_START)"
for s in shared_buffers synchronous_commit fsync wal_level wal_sync_method full_page_writes \
         max_wal_size checkpoint_timeout commit_delay; do
    printf '%-19s %s\n' "$s:" "$(setting "$s")"
done
echo "data directory:     $DIR/data ($(df -h --output=fstype,source "$DIR" | tail -1 | tr -s ' '))"
echo "pgbench:            -n -M prepared -c $CLIENTS -j $JOBS -T $SECONDS_PER_RUN, $ROUNDS round(s) of alternated ours/raw runs, median reported"
echo
record append.clients "$CLIENTS"
record append.jobs "$JOBS"
record append.seconds "$SECONDS_PER_RUN" s
record append.rounds "$ROUNDS"
record append.scaling_seconds "$SCALING_SECONDS" s
record append.shared_buffers_mib "$(sql -c "SELECT pg_size_bytes(current_setting('shared_buffers')) / 1048576")" MiB

# --- runs -------------------------------------------------------------------------------------
# run SCRIPT EVENTS_PER_TX [PGOPTIONS]: reset the tables, checkpoint, run pgbench; print events/s.
run() {
    local script=$1 per_tx=$2 opts=${3:-} out tps
    local clients=${RUN_CLIENTS:-$CLIENTS} seconds=${RUN_SECONDS:-$SECONDS_PER_RUN} jobs=$JOBS
    [ "$jobs" -gt "$clients" ] && jobs=$clients
    sql -f "$SCRIPTS/reset.sql" >/dev/null 2>&1
    out=$(PGOPTIONS=$opts "$PGBENCH" -n -M prepared -c "$clients" -j "$jobs" -T "$seconds" \
            -f "$SCRIPTS/$script.sql" 2>&1) || { echo "$out" >&2; die "pgbench $script failed"; }
    if grep -q 'number of failed transactions: [1-9]' <<<"$out"; then
        echo "$out" >&2; die "pgbench $script had failed transactions"
    fi
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")
    [ -n "$tps" ] || { echo "$out" >&2; die "no tps in pgbench output"; }
    awk -v t="$tps" -v n="$per_tx" 'BEGIN { printf "%.0f", t * n }'
}

# The median of space-separated events/s figures, whole events.
median_rate() { tr ' ' '\n' | grep . | median | awk '{ printf "%.0f\n", $1 }'; }

# side SCRIPT: the contender a script stands for in the recorded keys (single_raw -> raw,
# zipf_plpgsql -> plpgsql, batch_raw_idx -> raw_idx).
side() { echo "${1#*_}"; }

declare -A RESULT
# pair NAME OURS RAW EVENTS_PER_TX [PGOPTIONS] [EXTRA...]: alternate ours/raw(/extra) runs;
# records append.NAME.<side> (median events/s), append.NAME.round_ratio (median of the
# per-round ours/raw ratios) and append.NAME.round.<i>.<side>.
pair() {
    local name=$1 ours=$2 raw=$3 per_tx=$4 opts=${5:-}; shift 5 || shift $#
    local extras=("$@") i o r e ours_all="" raw_all="" ratio_all="" extra_all=()
    for ((i = 1; i <= ROUNDS; i++)); do
        o=$(run "$ours" "$per_tx" "$opts"); ours_all+="$o "
        r=$(run "$raw" "$per_tx" "$opts"); raw_all+="$r "
        ratio_all+="$(ratio "$o" "$r") "
        record "append.$name.round.$i.ours" "$o" ev/s
        record "append.$name.round.$i.$(side "$raw")" "$r" ev/s
        local line="  round $i: ours $o events/s, raw $r events/s"
        local k
        for k in "${!extras[@]}"; do
            e=$(run "${extras[$k]}" "$per_tx" "$opts"); extra_all[$k]+="$e "
            record "append.$name.round.$i.$(side "${extras[$k]}")" "$e" ev/s
            line+=", ${extras[$k]} $e"
        done
        echo "$line (load $(cut -d' ' -f1 /proc/loadavg))"
    done
    RESULT[$name.ours]=$(median_rate <<<"$ours_all")
    RESULT[$name.raw]=$(median_rate <<<"$raw_all")
    RESULT[$name.ratio]=$(tr ' ' '\n' <<<"$ratio_all" | grep . | median | awk '{ printf "%.2f\n", $1 }')
    RESULT[$name.ours_all]=$ours_all
    RESULT[$name.raw_all]=$raw_all
    record "append.$name.ours" "${RESULT[$name.ours]}" ev/s
    record "append.$name.$(side "$raw")" "${RESULT[$name.raw]}" ev/s
    record "append.$name.round_ratio" "${RESULT[$name.ratio]}"
    for k in "${!extras[@]}"; do
        RESULT[$name.${extras[$k]}]=$(median_rate <<<"${extra_all[$k]}")
        record "append.$name.$(side "${extras[$k]}")" "${RESULT[$name.${extras[$k]}]}" ev/s
    done
}

report() {
    local name=$1 label=$2 o r
    o=${RESULT[$name.ours]}; r=${RESULT[$name.raw]}
    printf '%-42s ours %7s ev/s  raw %7s ev/s  ratio of medians %s  median per-round ratio %s\n' \
        "$label" "$o" "$r" "$(ratio_rec "append.$name.ratio" "$o" "$r")" "${RESULT[$name.ratio]}"
}

extra() {
    if [ "$BREAKDOWN" = 1 ]; then echo "$1_raw_idx $1_sql"; fi
    if [ "$BREAKDOWN" = 1 ] && [ "$1" = single ]; then echo single_invoker; fi
}

say "single event, synchronous_commit=on (${ROUNDS}x${SECONDS_PER_RUN}s per side)"
echo "== single event per transaction (append_event vs INSERT ... VALUES), synchronous_commit=on"
pair single single_ours single_raw 1 "" single_plpgsql
say "100-event batches, synchronous_commit=on"
echo "== 100-event batch per transaction (append vs INSERT ... SELECT generate_series), synchronous_commit=on"
pair batch batch_ours batch_raw 100 "" batch_plpgsql
if [ "$ASYNC" = 1 ]; then
    say "both workloads again with synchronous_commit=off on both sides"
    echo "== single event, synchronous_commit=off (both sides)"
    pair single_async single_ours single_raw 1 "-c synchronous_commit=off" $(extra single)
    echo "== 100-event batch, synchronous_commit=off (both sides)"
    pair batch_async batch_ours batch_raw 100 "-c synchronous_commit=off" $(extra batch)
fi

say "event shapes: minimal (empty data) and realistic (order domain, ~300 bytes, Zipf-skewed streams)"
echo "== minimal event, new stream per call, durable"
pair tiny tiny_ours tiny_raw 1 "" tiny_plpgsql
echo "== realistic: 100,000 order streams picked Zipf(1.1), ~300-byte events, durable (ours vs PL/pgSQL)"
pair zipf zipf_ours zipf_plpgsql 1 ""

if [ -n "$SCALING" ]; then
    say "single event by number of clients: $SCALING (${ROUNDS}x${SCALING_SECONDS}s per side)"
    for c in $SCALING; do
        echo "== single event, durable, $c client(s)"
        RUN_CLIENTS=$c RUN_SECONDS=$SCALING_SECONDS pair "scale.$c" single_ours single_raw 1 "" single_plpgsql
    done
fi

# hot SCRIPT TABLE: a contention run with per-transaction latencies (pgbench -l); prints
# "committed_ev/s es001_fraction p50_ms p99_ms".
hot() {
    local script=$1 table=$2 out attempts committed
    sql -f "$SCRIPTS/reset.sql" >/dev/null 2>&1
    rm -rf "$DIR/hotlog"; mkdir -p "$DIR/hotlog"
    out=$(cd "$DIR/hotlog" && "$PGBENCH" -n -M prepared -c "$CLIENTS" -j "$JOBS" -T "$SECONDS_PER_RUN" \
            -l --log-prefix=hot -f "$SCRIPTS/$script.sql" 2>&1) || { echo "$out" >&2; die "pgbench $script failed"; }
    attempts=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    committed=$(sql -c "SELECT count(*) FROM $table")
    # pgbench -l: client, transaction, latency (us), script, epoch, us
    cat "$DIR"/hotlog/hot.* | awk '{ print $3 }' | sort -n | awk -v a="$attempts" -v c="$committed" \
        -v s="$SECONDS_PER_RUN" '{ v[NR] = $1 } END {
            p50 = v[int(NR * 0.50) > 0 ? int(NR * 0.50) : 1]; p99 = v[int(NR * 0.99) > 0 ? int(NR * 0.99) : 1]
            printf "%.0f %.3f %.2f %.2f\n", c / s, (a - c) / a, p50 / 1000, p99 / 1000 }'
}
# hot_record PREFIX "RATE ES001 P50 P99": a hot-stream result under PREFIX.{rate,es001,p50,p99}.
hot_record() {
    local a b c d
    read -r a b c d <<<"$2"
    record "$1.rate" "$a" ev/s; record "$1.es001" "$b"; record "$1.p50" "$c" ms; record "$1.p99" "$d" ms
}
if [ "$HOT" = 1 ]; then
    say "hot streams: $CLIENTS clients on 10 streams with expected versions (${ROUNDS}x${SECONDS_PER_RUN}s per side)"
    hot_ours_all=() hot_pl_all=()
    for ((i = 1; i <= ROUNDS; i++)); do
        o=$(hot hot_ours eventstore.events); p=$(hot hot_plpgsql bench.pl_events)
        hot_ours_all+=("$o"); hot_pl_all+=("$p")
        hot_record "append.hot.round.$i.ours" "$o"; hot_record "append.hot.round.$i.plpgsql" "$p"
        echo "  round $i: ours $o | plpgsql $p   (committed ev/s, ES001 fraction, p50 ms, p99 ms)"
    done
    # Median per column.
    hot_median() {
        local col out=""
        for col in 1 2 3 4; do
            out+="$(printf '%s\n' "$@" | awk -v c="$col" '{ print $c }' | median) "
        done
        echo "$out"
    }
    HOT_OURS=$(hot_median "${hot_ours_all[@]}"); HOT_PL=$(hot_median "${hot_pl_all[@]}")
    hot_record append.hot.ours "$HOT_OURS"; hot_record append.hot.plpgsql "$HOT_PL"
fi

echo
echo "== summary: median events/s over $ROUNDS run(s) of ${SECONDS_PER_RUN}s, $CLIENTS clients (target ratio >= 0.80)"
report single "single event, durable (sync commit on)"
report batch "100-event batch, durable (sync commit on)"
if [ "$ASYNC" = 1 ]; then
    report single_async "single event, synchronous_commit=off"
    report batch_async "100-event batch, synchronous_commit=off"
fi
echo
echo "== the PL/pgSQL append a user would write (same checks, same table shape), durable"
printf '%-42s ours %7s ev/s  plpgsql %7s ev/s  ours/plpgsql %s\n' "single event" "${RESULT[single.ours]}" \
    "${RESULT[single.single_plpgsql]}" "$(ratio_rec append.single.ratio_plpgsql "${RESULT[single.ours]}" "${RESULT[single.single_plpgsql]}")"
printf '%-42s ours %7s ev/s  plpgsql %7s ev/s  ours/plpgsql %s\n' "100-event batch" "${RESULT[batch.ours]}" \
    "${RESULT[batch.batch_plpgsql]}" "$(ratio_rec append.batch.ratio_plpgsql "${RESULT[batch.ours]}" "${RESULT[batch.batch_plpgsql]}")"
echo
echo "== event shapes, durable: median events/s"
printf '%-42s ours %7s  raw %7s  plpgsql %7s  ours/raw %s  ours/plpgsql %s\n' "minimal event (empty data)" \
    "${RESULT[tiny.ours]}" "${RESULT[tiny.raw]}" "${RESULT[tiny.tiny_plpgsql]}" \
    "$(ratio_rec append.tiny.ratio "${RESULT[tiny.ours]}" "${RESULT[tiny.raw]}")" \
    "$(ratio_rec append.tiny.ratio_plpgsql "${RESULT[tiny.ours]}" "${RESULT[tiny.tiny_plpgsql]}")"
printf '%-42s ours %7s  plpgsql %7s  ours/plpgsql %s\n' "realistic (orders, Zipf streams)" \
    "${RESULT[zipf.ours]}" "${RESULT[zipf.raw]}" "$(ratio_rec append.zipf.ratio_plpgsql "${RESULT[zipf.ours]}" "${RESULT[zipf.raw]}")"
if [ -n "$SCALING" ]; then
    echo
    echo "== single event, durable, by clients: median events/s (ours/raw, ours/plpgsql)"
    for c in $SCALING; do
        printf '%3s clients  ours %7s  raw %7s  plpgsql %7s  ours/raw %s  ours/plpgsql %s\n' "$c" \
            "${RESULT[scale.$c.ours]}" "${RESULT[scale.$c.raw]}" "${RESULT[scale.$c.single_plpgsql]}" \
            "$(ratio_rec "append.scale.$c.ratio" "${RESULT[scale.$c.ours]}" "${RESULT[scale.$c.raw]}")" \
            "$(ratio_rec "append.scale.$c.ratio_plpgsql" "${RESULT[scale.$c.ours]}" "${RESULT[scale.$c.single_plpgsql]}")"
    done
fi
if [ "$HOT" = 1 ]; then
    echo
    echo "== hot streams, $CLIENTS clients on 10 streams (medians): committed ev/s, ES001 fraction of attempts, p50/p99 ms"
    read -r a b c d <<<"$HOT_OURS"; printf 'ours     %7s ev/s  ES001 %s  p50 %s ms  p99 %s ms\n' "$a" "$b" "$c" "$d"
    read -r a b c d <<<"$HOT_PL";   printf 'plpgsql  %7s ev/s  ES001 %s  p50 %s ms  p99 %s ms\n' "$a" "$b" "$c" "$d"
fi
if [ "$BREAKDOWN" = 1 ] && [ "$ASYNC" = 1 ]; then
    echo
    echo "== breakdown, synchronous_commit=off: median events/s (fraction of raw)"
    echo "   raw+2idx: raw INSERT into a copy that also has the two paging indexes of eventstore.events"
    echo "   plain SQL: append's work as one SQL statement (stream upsert + insert, all five indexes)"
    for n in single_async batch_async; do
        w=${n%_async}; r=${RESULT[$n.raw]}
        printf '%-13s raw %7s   raw+2idx %7s (%s)   plain SQL %7s (%s)   ours %7s (%s)\n' "$n" "$r" \
            "${RESULT[$n.${w}_raw_idx]}" "$(ratio_rec "append.$n.ratio_raw_idx" "${RESULT[$n.${w}_raw_idx]}" "$r")" \
            "${RESULT[$n.${w}_sql]}" "$(ratio_rec "append.$n.ratio_sql" "${RESULT[$n.${w}_sql]}" "$r")" \
            "${RESULT[$n.ours]}" "$(ratio "${RESULT[$n.ours]}" "$r")"
    done
fi

if [ "$BREAKDOWN" = 1 ] && [ "$ASYNC" = 1 ]; then
    # What hardening costs append_event where its own work shows (synchronous_commit=off):
    # SECURITY DEFINER with a pinned search_path (A/B: the same C function declared without
    # them), and the depth check (timed in-process on the same payload, against one append).
    echo
    echo "== hardening, single event, synchronous_commit=off"
    definer=${RESULT[single_async.ours]}; invoker=${RESULT[single_async.single_invoker]}
    printf 'SECURITY DEFINER + SET search_path   ours %7s ev/s   same code as invoker %7s ev/s   ours/invoker %s\n' \
        "$definer" "$invoker" "$(ratio_rec append.hardening.definer_ratio "$definer" "$invoker")"
    depth_ns=$(cd "$REPO_ROOT" && cargo run --release -q -p eventstore-core --features encoder \
        --example depth_check_cost)
    record append.hardening.depth_check_ns "$depth_ns" ns
    # One append's CPU time, CPU-bound on all cores: cores / (events/s).
    share=$(awk -v ns="$depth_ns" -v evs="$definer" -v cores="$(nproc)" 'BEGIN { printf "%.4f", ns * evs / (1e9 * cores) }')
    record append.hardening.depth_check_share "$share"
    printf 'depth check on the same payload      %s ns per event = %s of one append_event\n' "$depth_ns" "$share"
fi

if [ "$(so_facts)" != "$SO_AT_START" ]; then
    echo
    echo "WARNING: $SO changed during the run (now $(so_facts)); figures mix two builds."
fi
