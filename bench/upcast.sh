#!/usr/bin/env bash
# The cost of upcasting on reads, measured with pgbench on a throwaway cluster. A benchmark: it
# prints figures and the targets, it does not pass or fail.
#
#   bash bench/upcast.sh            # full: BENCH_ROUNDS alternated rounds, medians reported
#   bash bench/upcast.sh --quick    # smoke run (or BENCH_QUICK=1)
#
# Settings (environment):
#   BENCH_EVENTS   events per stream                        (default 50000)
#   BENCH_ROUNDS   alternated rounds; median reported        (default 5; --quick: 1)
#   BENCH_INSTALL  1 = build and install the extension first (default: only when missing)
#
# Two databases hold the same two streams: `plain` has no upcasters; in `evolved`, half the
# events of stream mixed-1 (ItemAdded, stored at version 1) go through a two-step chain to
# version 3 (one SQL and one PL/pgSQL upcaster), and stream current-1 holds only events already
# at their type's current version. Compared, plain vs evolved, in one run:
#   1. read_stream of mixed-1 to the client          (target >= 0.7 of plain's speed)
#   2. replay of mixed-1, PL/pgSQL reducer            (target >= 0.7)
#   3. replay of mixed-1, eventstore.merge            (target >= 0.7)
#   4. the same three on current-1                    (target: no measurable cost, ~1.0)
#
# Every figure printed is also recorded under upcast.* (scripts/lib.sh `record`) for the report.
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

bench_cluster pg_eventstore_upcast_bench
sql() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -At "$@"; }

# --- the stores ------------------------------------------------------------------------------
for db in plain evolved; do
    say "database $db: two streams of $EVENTS events"
    sql -c "CREATE DATABASE $db" >/dev/null
    sql -d "$db" -c "CREATE EXTENSION pg_eventstore" >/dev/null
    sql -d "$db" >/dev/null <<'SQL'
-- The reducer: a shallow merge.
CREATE FUNCTION concat_data(state jsonb, event eventstore.events) RETURNS jsonb
LANGUAGE plpgsql AS $$ BEGIN RETURN state || event.data; END $$;
-- The chain (registered in evolved only): ItemAdded v1 {sku, qty, price} -> v2 adds the
-- currency -> v3 nests the price with it.
CREATE FUNCTION item_added_v1_v2(data jsonb, metadata jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE RETURN data || '{"currency": "EUR"}';
CREATE FUNCTION item_added_v2_v3(data jsonb, metadata jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN (data - 'price' - 'currency')
           || jsonb_build_object('price', jsonb_build_object('amount', data->'price',
                                                             'currency', data->'currency'));
END $$;
SQL
    if [ "$db" = evolved ]; then
        sql -d "$db" >/dev/null <<'SQL'
SELECT eventstore.register_upcaster('ItemAdded', 1, 'item_added_v1_v2(jsonb,jsonb)');
SELECT eventstore.register_upcaster('ItemAdded', 2, 'item_added_v2_v3(jsonb,jsonb)');
SQL
    fi
    # mixed-1: ItemAdded (stored at version 1) and PaymentCaptured (no chain), alternating.
    # current-1: PaymentCaptured and OrderShipped only.
    sql -d "$db" -v events="$EVENTS" >/dev/null <<'SQL'
SELECT count(*) FROM generate_series(0, (:events - 1) / 1000) AS b,
LATERAL eventstore.append('mixed-1', (
    SELECT jsonb_agg(CASE WHEN i % 2 = 0
        THEN jsonb_build_object('type', 'ItemAdded', 'schema_version', 1,
                 'data', jsonb_build_object('seq', i, 'sku', 'sku-' || i % 100, 'qty', 1 + i % 3,
                                            'price', round((i % 1000) * 1.25, 2)))
        ELSE jsonb_build_object('type', 'PaymentCaptured',
                 'data', jsonb_build_object('seq', i, 'amount', round((i % 1000) * 1.25, 2),
                                            'method', 'card'))
        END)
    FROM generate_series(b * 1000 + 1, least(b * 1000 + 1000, :events)) AS i));
SELECT count(*) FROM generate_series(0, (:events - 1) / 1000) AS b,
LATERAL eventstore.append('current-1', (
    SELECT jsonb_agg(jsonb_build_object(
        'type', (ARRAY['PaymentCaptured', 'OrderShipped'])[1 + i % 2],
        'data', jsonb_build_object('seq', i, 'amount', round((i % 1000) * 1.25, 2),
                                   'method', 'card')))
    FROM generate_series(b * 1000 + 1, least(b * 1000 + 1000, :events)) AS i));
VACUUM ANALYZE eventstore.events;
SQL
done
[ "$(sql -d evolved -c "SELECT count(*) FROM eventstore.read_stream('mixed-1') WHERE schema_version = 3")" = \
  $((EVENTS / 2)) ] || die "half of mixed-1 should read at version 3"

# --- workloads ---------------------------------------------------------------------------------
W=$DIR/workloads; mkdir -p "$W"
for s in mixed current; do
    echo "SELECT * FROM eventstore.read_stream('$s-1');" >"$W/read_$s.sql"
    echo "SELECT eventstore.replay('$s-1', 'concat_data'::regproc, snapshot_name => 'none');" \
        >"$W/plpgsql_$s.sql"
    echo "SELECT eventstore.replay('$s-1', 'eventstore.merge'::regproc, snapshot_name => 'none');" \
        >"$W/merge_$s.sql"
done

# run DB SCRIPT TRANSACTIONS: one pgbench run; prints the mean latency in ms.
run() {
    local out lat
    out=$("$PGBENCH" -n -M prepared -c 1 -t "$3" -f "$W/$2.sql" "$1" 2>&1) \
        || { echo "$out" >&2; die "pgbench $2 on $1 failed"; }
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p' <<<"$out")
    [ -n "$lat" ] || { echo "$out" >&2; die "no latency in pgbench output"; }
    echo "$lat"
}

declare -A TX=([read_mixed]=5 [plpgsql_mixed]=3 [merge_mixed]=5
               [read_current]=5 [plpgsql_current]=3 [merge_current]=5)
ORDER=(read_mixed plpgsql_mixed merge_mixed read_current plpgsql_current merge_current)
declare -A ALL

echo "== machine"
echo "cpus:            $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
echo "load average:    $(cut -d' ' -f1-3 /proc/loadavg) (at start)"
echo "postgresql:      $(sql -c 'SHOW server_version')"
echo "pg_eventstore:   $(sql -d evolved -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_eventstore'")"
echo "streams:         mixed-1 and current-1, $EVENTS events each; evolved upcasts $((EVENTS / 2)) events of mixed-1 through 2 steps"
echo "method:          pgbench -n -M prepared -c 1, $ROUNDS round(s), databases and workloads alternated, median latency"
echo
record upcast.events "$EVENTS"
record upcast.rounds "$ROUNDS"

for w in "${ORDER[@]}"; do for db in plain evolved; do run "$db" "$w" 1 >/dev/null; done; done
for ((r = 1; r <= ROUNDS; r++)); do
    line="  round $r:"
    for w in "${ORDER[@]}"; do
        for db in plain evolved; do
            ms=$(run "$db" "$w" "${TX[$w]}")
            ALL[$w.$db]+="$ms "
            record "upcast.round.$r.$w.$db" "$ms" ms
            line+=" $w/$db ${ms}ms"
        done
    done
    echo "$line"
done

echo
echo "== summary: median latency per call, plain (no upcasters) vs evolved; speed = plain / evolved"
printf '%-44s %12s %12s %8s  %s\n' workload "plain ms" "evolved ms" speed target
for w in "${ORDER[@]}"; do
    plain=$(tr ' ' '\n' <<<"${ALL[$w.plain]}" | grep . | median)
    evolved=$(tr ' ' '\n' <<<"${ALL[$w.evolved]}" | grep . | median)
    record "upcast.$w.plain" "$plain" ms
    record "upcast.$w.evolved" "$evolved" ms
    speed=$(ratio "$plain" "$evolved")
    record "upcast.ratio.$w" "$speed"
    case $w in *_mixed) target=">= 0.70" ;; *) target="~1.00" ;; esac
    printf '%-44s %12s %12s %8s  %s\n' "$w" "$plain" "$evolved" "$speed" "$target"
done
