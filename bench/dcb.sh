#!/usr/bin/env bash
# Append conditions and append_multi (docs/dcb.md), measured with pgbench on a throwaway cluster.
# A benchmark: it prints figures, it does not pass or fail.
#
#   bash bench/dcb.sh            # full: BENCH_ROUNDS x BENCH_SECONDS per side and workload
#   bash bench/dcb.sh --quick    # smoke run of a few seconds (or BENCH_QUICK=1)
#
# Workloads (each pair alternated round by round; medians):
#   single    conditional append_event (a condition on a boundary of its own: nothing else ever
#             matches it) against the same append_event without a condition; 8 clients
#   decide    a course-subscription decision (read_query, decide, append after the token, on
#             ES005 decide again) against the same check-and-insert in PL/pgSQL at SERIALIZABLE
#             retried on 40001 (pgbench --max-tries); disjoint: each client its own courses;
#             hot: every client on one course
#   multi     append_multi of two streams against two append calls in one transaction
#
# Settings (environment): BENCH_SECONDS per run (default 15; --quick: 2), BENCH_ROUNDS (default
# 3; --quick: 1), BENCH_CLIENTS (default 8), BENCH_JOBS (default: nproc).
# Every figure is recorded under dcb.* (scripts/lib.sh `record`).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../scripts/lib.sh
source "$HERE/../scripts/lib.sh"
SCRIPTS=$HERE/dcb
PGBENCH=$PG_BIN/pgbench
PSQL=$PG_BIN/psql

bench_args "${BASH_SOURCE[0]}" "$@"
if [ "$QUICK" = 1 ]; then
    SECONDS_PER_RUN=${BENCH_SECONDS:-2}; ROUNDS=${BENCH_ROUNDS:-1}
else
    SECONDS_PER_RUN=${BENCH_SECONDS:-15}; ROUNDS=${BENCH_ROUNDS:-3}
fi
CLIENTS=${BENCH_CLIENTS:-8}
JOBS=${BENCH_JOBS:-$(nproc)}
[ "$JOBS" -gt "$CLIENTS" ] && JOBS=$CLIENTS

ensure_extension
bench_cluster pg_eventstore_dcb
sql() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -At "$@"; }
sql -c "CREATE EXTENSION pg_eventstore" >/dev/null
sql -f "$SCRIPTS/schema.sql" >/dev/null
for s in cond_single plain_single decide_disjoint serial_disjoint decide_hot serial_hot multi two_appends; do
    "$PGBENCH" -n -M prepared -t 1 -f "$SCRIPTS/$s.sql" >/dev/null 2>"$DIR/check.log" \
        || { cat "$DIR/check.log"; die "bench/dcb/$s.sql failed"; }
done

# run SCRIPT [PGBENCH OPTIONS...]: empty store, checkpoint, pgbench; prints "tps failed retried".
run() {
    local script=$1 out tps failed retried
    shift
    (cd "$SCRIPTS" && sql -f reset.sql >/dev/null 2>&1)
    sql -c CHECKPOINT >/dev/null
    out=$("$PGBENCH" -n -M prepared -c "$CLIENTS" -j "$JOBS" -T "$SECONDS_PER_RUN" "$@" \
            -f "$SCRIPTS/$script.sql" 2>&1) || { echo "$out" >&2; die "pgbench $script failed"; }
    if grep -q 'aborted' <<<"$out"; then
        echo "$out" >&2; die "pgbench $script: a client aborted (an error no retry covers)"
    fi
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")
    [ -n "$tps" ] || { echo "$out" >&2; die "no tps in pgbench output"; }
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
    retried=$(sed -n 's/^number of transactions retried: \([0-9]*\).*/\1/p' <<<"$out")
    printf '%.0f %s %s\n' "$tps" "${failed:-0}" "${retried:-0}"
}
median_of() { tr ' ' '\n' | grep . | median | awk '{ printf "%.0f\n", $1 }'; }

# pair NAME A_SCRIPT A_OPTS B_SCRIPT B_OPTS: alternate A and B for ROUNDS rounds; record medians.
pair() {
    local name=$1 a=$2 a_opts=$3 b=$4 b_opts=$5 i ra rb a_all="" b_all="" a_fail=0 b_fail=0 a_retry=0 b_retry=0
    for i in $(seq 1 "$ROUNDS"); do
        # shellcheck disable=SC2086 # options are words
        read -r ra fa ta < <(PGOPTIONS=${a_opts%%|*} run "$a" ${a_opts#*|})
        # shellcheck disable=SC2086
        read -r rb fb tb < <(PGOPTIONS=${b_opts%%|*} run "$b" ${b_opts#*|})
        echo "  round $i: $a $ra/s, $b $rb/s"
        a_all+=" $ra"; b_all+=" $rb"
        a_fail=$((a_fail + fa)); b_fail=$((b_fail + fb)); a_retry=$((a_retry + ta)); b_retry=$((b_retry + tb))
    done
    local ma mb
    ma=$(median_of <<<"$a_all"); mb=$(median_of <<<"$b_all")
    record "dcb.$name.$a" "$ma" "tx/s"; record "dcb.$name.$b" "$mb" "tx/s"
    record "dcb.$name.$a.retried" "$a_retry"; record "dcb.$name.$b.retried" "$b_retry"
    record "dcb.$name.$a.failed" "$a_fail"; record "dcb.$name.$b.failed" "$b_fail"
    printf '%-10s %-16s %8s tx/s  (retried %s, failed %s)\n' "$name" "$a" "$ma" "$a_retry" "$a_fail"
    printf '%-10s %-16s %8s tx/s  (retried %s, failed %s)\n' "$name" "$b" "$mb" "$b_retry" "$b_fail"
    printf '%-10s ratio %s\n' "$name" "$(ratio_rec "dcb.$name.ratio" "$ma" "$mb")"
}

echo "== $CLIENTS clients, $SECONDS_PER_RUN s per run, $ROUNDS rounds"
pair single cond_single "|" plain_single "|"
# A conditional append that fails would abort its pgbench client: none did, so the disjoint
# boundaries saw no false conflict.
record dcb.single.false_conflicts 0
pair decide_disjoint decide_disjoint "|" serial_disjoint "-c default_transaction_isolation=serializable|--max-tries=1000"
pair decide_hot decide_hot "|" serial_hot "-c default_transaction_isolation=serializable|--max-tries=1000"
pair multi multi "|" two_appends "|"
