#!/usr/bin/env bash
# Replay speed of pg_eventstore on one long stream, measured with pgbench on a throwaway
# cluster. A benchmark: it prints figures and the targets, it does not pass or fail.
#
#   bash bench/replay.sh            # full: BENCH_ROUNDS alternated rounds, medians reported
#   bash bench/replay.sh --quick    # smoke run (or BENCH_QUICK=1)
#
# Settings (environment):
#   BENCH_EVENTS   events in the stream                     (default 50000)
#   BENCH_ROUNDS   alternated rounds; median reported        (default 5; --quick: 1)
#   BENCH_INSTALL  1 = build and install the extension first (default: only when missing)
#
# Comparisons (each side runs alternately, one pgbench run per side and round):
#   1. replay with a PL/pgSQL reducer from the first event vs from a snapshot 10 events back
#      (target >= 20x)
#   2. replay with eventstore.merge vs a PL/pgSQL `state || data` reducer (target >= 3x)
#   3. read_stream of the whole stream vs a raw SELECT of the same rows (target >= 0.8)
# plus a breakdown of where a PL/pgSQL fold spends its time.
#
# Every figure printed is also recorded under replay.* (scripts/lib.sh `record`) for the report.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../scripts/lib.sh
source "$HERE/../scripts/lib.sh"
PGBENCH=$PG_BIN/pgbench
PSQL=$PG_BIN/psql

bench_args "${BASH_SOURCE[0]}" "$@"
EVENTS=${BENCH_EVENTS:-50000}
if [ "$QUICK" = 1 ]; then ROUNDS=${BENCH_ROUNDS:-1}; else ROUNDS=${BENCH_ROUNDS:-5}; fi

ensure_extension

# --- a throwaway cluster, stopped and removed on exit ---------------------------------------
bench_cluster pg_eventstore_replay_bench
sql() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -At "$@"; }

# --- the stream: order lines, payments and shipments of one long-lived account ---------------
say "appending $EVENTS events to stream account-1"
sql -c "CREATE EXTENSION pg_eventstore" >/dev/null
sql -v events="$EVENTS" >/dev/null <<'SQL'
SELECT count(*) FROM generate_series(0, (:events - 1) / 1000) AS b,
LATERAL eventstore.append('account-1', (
    SELECT jsonb_agg(jsonb_build_object(
        'type', (ARRAY['ItemAdded', 'PaymentCaptured', 'AddressChanged', 'OrderShipped'])[1 + i % 4],
        'data', jsonb_build_object(
            'seq', i,
            'last_order', 'order-' || (i / 10),
            'totals', jsonb_build_object('items', i % 17, 'amount', round((i % 1000) * 1.25, 2)),
            'customer', jsonb_build_object('id', 'c-1', 'tier', (ARRAY['silver', 'gold'])[1 + i % 2],
                                           'address', jsonb_build_object('city', 'city-' || i % 50)))))
    FROM generate_series(b * 1000 + 1, least(b * 1000 + 1000, :events)) AS i));

-- The PL/pgSQL reducers: a shallow merge, and one that does nothing (call overhead only).
CREATE FUNCTION concat_data(state jsonb, event eventstore.events) RETURNS jsonb
LANGUAGE plpgsql AS $$ BEGIN RETURN state || event.data; END $$;
CREATE FUNCTION keep_state(state jsonb, event eventstore.events) RETURNS jsonb
LANGUAGE plpgsql AS $$ BEGIN RETURN state; END $$;
VACUUM ANALYZE eventstore.events;
SQL
[ "$(sql -c "SELECT eventstore.stream_version('account-1')")" = "$EVENTS" ] || die "the stream has no $EVENTS events"
SNAP=$((EVENTS - 10))
sql -c "SELECT eventstore.save_snapshot('account-1', 'public.concat_data', $SNAP,
    eventstore.replay('account-1', 'concat_data'::regproc, until_version => $SNAP, snapshot_name => 'none'))" >/dev/null
# Both folds give the same state as the reducer without the snapshot.
[ "$(sql -c "SELECT eventstore.replay('account-1', 'concat_data'::regproc) =
                    eventstore.replay('account-1', 'concat_data'::regproc, snapshot_name => 'none')")" = t ] \
    || die "replay from the snapshot differs from a full replay"
# merge and the shallow || agree on this data (all changes are whole top-level values or
# nested objects with the same keys each time).
[ "$(sql -c "SELECT eventstore.replay('account-1', 'eventstore.merge'::regproc) =
                    eventstore.replay('account-1', 'concat_data'::regproc, snapshot_name => 'none')")" = t ] \
    || die "merge and concat_data disagree"

# --- workloads: one pgbench script each -------------------------------------------------------
W=$DIR/workloads; mkdir -p "$W"
cat >"$W/plpgsql_full.sql" <<'SQL'
SELECT eventstore.replay('account-1', 'concat_data'::regproc, snapshot_name => 'none');
SQL
cat >"$W/plpgsql_snapshot.sql" <<'SQL'
SELECT eventstore.replay('account-1', 'concat_data'::regproc);
SQL
cat >"$W/merge_full.sql" <<'SQL'
SELECT eventstore.replay('account-1', 'eventstore.merge'::regproc, snapshot_name => 'none');
SQL
cat >"$W/keep_full.sql" <<'SQL'
SELECT eventstore.replay('account-1', 'keep_state'::regproc, snapshot_name => 'none');
SQL
cat >"$W/read_stream.sql" <<'SQL'
SELECT * FROM eventstore.read_stream('account-1');
SQL
cat >"$W/raw_select.sql" <<'SQL'
SELECT * FROM eventstore.events WHERE stream_id = 'account-1' AND stream_version >= 1
ORDER BY stream_version;
SQL
cat >"$W/scan_only.sql" <<'SQL'
SELECT count(e.*) FROM eventstore.events e WHERE e.stream_id = 'account-1';
SQL

# run SCRIPT TRANSACTIONS: one pgbench run; prints the mean latency in ms.
run() {
    local out lat
    out=$("$PGBENCH" -n -M prepared -c 1 -t "$2" -f "$W/$1.sql" 2>&1) \
        || { echo "$out" >&2; die "pgbench $1 failed"; }
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p' <<<"$out")
    [ -n "$lat" ] || { echo "$out" >&2; die "no latency in pgbench output"; }
    echo "$lat"
}

# Transactions per run, so that each run lasts roughly a second or more.
declare -A TX=([plpgsql_full]=3 [plpgsql_snapshot]=300 [merge_full]=5 [keep_full]=5
               [read_stream]=10 [raw_select]=10 [scan_only]=20)
declare -A ALL
ORDER=(plpgsql_full plpgsql_snapshot merge_full keep_full read_stream raw_select scan_only)

echo "== machine"
echo "cpus:            $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
echo "load average:    $(cut -d' ' -f1-3 /proc/loadavg) (at start)"
echo "postgresql:      $(sql -c 'SHOW server_version'), shared_buffers $(sql -c 'SHOW shared_buffers')"
echo "pg_eventstore:   $(sql -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_eventstore'")"
data_bytes=$(sql -c "SELECT sum(pg_column_size(data)) FROM eventstore.events")
state_bytes=$(sql -c "SELECT pg_column_size(eventstore.replay('account-1', 'eventstore.merge'::regproc))")
echo "stream:          $EVENTS events, $(sql -c "SELECT pg_size_pretty($data_bytes::bigint)") of data;" \
     "final state $state_bytes bytes"
echo "method:          pgbench -n -M prepared -c 1, $ROUNDS round(s), workloads alternated within each round, median latency"
echo
record replay.events "$EVENTS"
record replay.rounds "$ROUNDS"
record replay.snapshot_distance $((EVENTS - SNAP))
record replay.data_bytes "$data_bytes" bytes
record replay.state_bytes "$state_bytes" bytes
record replay.shared_buffers_mib "$(sql -c "SELECT pg_size_bytes(current_setting('shared_buffers')) / 1048576")" MiB

# Warm the cache and the plans once.
for w in "${ORDER[@]}"; do run "$w" 1 >/dev/null; done
for ((r = 1; r <= ROUNDS; r++)); do
    line="  round $r:"
    for w in "${ORDER[@]}"; do
        ms=$(run "$w" "${TX[$w]}")
        ALL[$w]+="$ms "
        record "replay.round.$r.$w" "$ms" ms
        line+=" $w ${ms}ms"
    done
    echo "$line"
done
declare -A MED
for w in "${ORDER[@]}"; do
    MED[$w]=$(tr ' ' '\n' <<<"${ALL[$w]}" | grep . | median)
    record "replay.$w" "${MED[$w]}" ms
done

# per_event MS EVENTS [KEY]: microseconds per event, recorded under KEY when given.
per_event() {
    local us; us=$(awk -v ms="$1" -v n="$2" 'BEGIN { printf "%.2f", ms * 1000 / n }')
    [ -z "${3:-}" ] || record "$3" "$us" us
    echo "$us"
}
echo
echo "== summary: median latency per call ($EVENTS events)"
printf '%-52s %10s ms  (%s us/event)\n' "replay, PL/pgSQL reducer, from the first event" "${MED[plpgsql_full]}" "$(per_event "${MED[plpgsql_full]}" "$EVENTS" replay.plpgsql_full.per_event)"
printf '%-52s %10s ms\n' "replay, PL/pgSQL reducer, from a snapshot 10 back" "${MED[plpgsql_snapshot]}"
printf '%-52s %10s   (target >= 20)\n' "  speed-up from the snapshot" "$(ratio_rec replay.ratio.snapshot "${MED[plpgsql_full]}" "${MED[plpgsql_snapshot]}")x"
printf '%-52s %10s ms  (%s us/event)\n' "replay, eventstore.merge (Rust), from the first event" "${MED[merge_full]}" "$(per_event "${MED[merge_full]}" "$EVENTS" replay.merge_full.per_event)"
printf '%-52s %10s   (target >= 3)\n' "  merge vs PL/pgSQL state || data" "$(ratio_rec replay.ratio.merge "${MED[plpgsql_full]}" "${MED[merge_full]}")x"
printf '%-52s %10s ms\n' "read_stream, whole stream to the client" "${MED[read_stream]}"
printf '%-52s %10s ms\n' "raw SELECT of the same rows" "${MED[raw_select]}"
printf '%-52s %10s   (target >= 0.80)\n' "  read_stream speed as a fraction of raw" "$(ratio_rec replay.ratio.read_stream "${MED[raw_select]}" "${MED[read_stream]}")"
echo
echo "== breakdown of the PL/pgSQL fold (per event)"
printf '%-52s %10s us\n' "scan of the stream's rows (count(e.*))" "$(per_event "${MED[scan_only]}" "$EVENTS" replay.scan_only.per_event)"
printf '%-52s %10s us\n' "replay with a PL/pgSQL reducer that returns state" "$(per_event "${MED[keep_full]}" "$EVENTS" replay.keep_full.per_event)"
printf '%-52s %10s us\n' "replay with PL/pgSQL state || data" "$(per_event "${MED[plpgsql_full]}" "$EVENTS")"
printf '%-52s %10s us\n' "replay with eventstore.merge" "$(per_event "${MED[merge_full]}" "$EVENTS")"
