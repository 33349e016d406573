#!/usr/bin/env bash
# pg_dump of a database with a store, pg_restore into a new database: every event, stream
# and snapshot comes back, and appending afterwards continues versions and never reuses a
# global position. Usage: dump_restore_test.sh HOST PORT  (a running server with the
# extension installed).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
host=$1 port=$2
psql_() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$host" -p "$port" -U postgres "$@"; }
dump=$(mktemp -d)
chmod 777 "$dump"

psql_ -d postgres -c "DROP DATABASE IF EXISTS dump_src" -c "DROP DATABASE IF EXISTS dump_dst" \
      -c "CREATE DATABASE dump_src" -c "CREATE DATABASE dump_dst"
psql_ -d dump_src <<'SQL' >/dev/null
CREATE EXTENSION pg_eventstore;
SELECT eventstore.append('order-' || i, '[{"type":"OrderPlaced","data":{"total":10}},{"type":"PaymentCaptured"}]')
FROM generate_series(1, 50) i;
INSERT INTO eventstore.snapshots (stream_id, snapshot_name, stream_version, state)
VALUES ('order-1', 'summary', 2, '{"status":"paid"}');
-- The deepest event append ever accepts (eventstore.max_json_depth at its ceiling): its text
-- form must read back on restore.
SET eventstore.max_json_depth = 1000;
SELECT eventstore.append_event('deep-1', 'Nested', (repeat('[', 1000) || repeat(']', 1000))::jsonb);
RESET eventstore.max_json_depth;
-- Schema evolution: the upcaster registry (a configuration table naming functions of the
-- database) and the versions events are stored at.
CREATE FUNCTION public.placed_v2(data jsonb, metadata jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE RETURN data || '{"currency": "EUR"}';
CREATE FUNCTION public.placed_v3(data jsonb, metadata jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE RETURN jsonb_build_object('amount', data->'total', 'currency', data->'currency');
SELECT eventstore.register_upcaster('OrderPlaced', 1, 'public.placed_v2(jsonb,jsonb)');
SELECT eventstore.register_upcaster('OrderPlaced', 2, 'public.placed_v3(jsonb,jsonb)', 'OrderSubmitted');
SELECT eventstore.append('evolved-1', '[{"type": "OrderPlaced", "data": {"total": 5}, "schema_version": 1},
                                        {"type": "OrderPlaced", "data": {"total": 6, "currency": "USD"}},
                                        {"type": "OrderSubmitted", "data": {"amount": 7, "currency": "GBP"}}]');
SQL
"$PG_BIN/pg_dump" -h "$host" -p "$port" -U postgres -Fc -f "$dump/src.dump" dump_src
"$PG_BIN/pg_restore" -h "$host" -p "$port" -U postgres -d dump_dst --exit-on-error "$dump/src.dump"

summary="SELECT (SELECT count(*) FROM eventstore.events) || ' events, '
             || (SELECT count(*) FROM eventstore.streams) || ' streams, '
             || (SELECT count(*) FROM eventstore.snapshots) || ' snapshots, '
             || (SELECT md5(string_agg(global_position || stream_id || stream_version || event_id
                                       || event_type || data::text || schema_version, ','
                                       ORDER BY global_position))
                 FROM eventstore.events)"
# What reads return: the registry and the upcast events.
evolved="SELECT (SELECT string_agg(type || ' ' || current_version || ' ' || chain::text, ', ' ORDER BY type)
                 FROM eventstore.event_types) || ' | '
             || (SELECT string_agg(event_type || ' v' || schema_version || ' ' || data::text, ', '
                                   ORDER BY stream_version)
                 FROM eventstore.read_stream('evolved-1'))"
src=$(psql_ -d dump_src -c "$summary")
dst=$(psql_ -d dump_dst -c "$summary")
evolved_src=$(psql_ -d dump_src -c "$evolved")
evolved_dst=$(psql_ -d dump_dst -c "$evolved")
max_before=$(psql_ -d dump_dst -c "SELECT max(global_position) FROM eventstore.events")
after=$(psql_ -d dump_dst -c "SELECT stream_version || ' ' || global_position
                              FROM eventstore.append_event('order-1', 'OrderShipped', '{}', expected_version => 2)")
still_append_only=$(psql_ -d dump_dst -c "DO \$\$ BEGIN DELETE FROM eventstore.events;
    EXCEPTION WHEN SQLSTATE 'ES003' THEN RAISE NOTICE 'ok'; RETURN; END \$\$; SELECT 'checked'" 2>&1)
deep=$(psql_ -d dump_dst -c "SELECT length(data::text) FROM eventstore.events WHERE stream_id = 'deep-1'")
psql_ -d postgres -c "DROP DATABASE dump_src" -c "DROP DATABASE dump_dst"
rm -rf "$dump"

failures=0
check() {
    if [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1: got '$2', want '$3'"; failures=$((failures + 1)); fi
}
check "restored store equals the dumped one" "$dst" "$src"
check "restored store has every row" "${dst%%,*}" "104 events"
check "the upcaster registry and stored versions are restored: reads return the same" \
      "$evolved_dst" "$evolved_src"
check "... and they are upcast" "$(grep -o 'OrderSubmitted v3' <<<"$evolved_dst" | wc -l)" "3"
check "the deepest accepted event is restored" "$deep" "2000"
check "append after restore continues the stream" "${after%% *}" "3"
check "append after restore takes a new global position" \
      "$([ "${after##* }" -gt "$max_before" ] && echo fresh || echo reused)" "fresh"
check "restored tables stay append-only" "$(grep -c ok <<<"$still_append_only")" "1"
passed=$((8 - failures))
echo "dump/restore: $passed passed, $failures failed"
[ "$failures" = 0 ]
