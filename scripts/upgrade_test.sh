#!/usr/bin/env bash
# Upgrades from every earlier release: for each released install script kept in extension/sql
# (pg_eventstore--V.sql), a database is created at V, given events, streams, snapshots and an
# application role granted what V's README told users to grant, and updated with ALTER
# EXTENSION pg_eventstore UPDATE. Then: the data is untouched, the role still appends (through
# the API) and no longer writes tables, the regress suite passes on a database updated from V, and
# the catalog (scripts/catalog.sql) equals a fresh install's. Also: the current version's install
# script, once released, is kept as released.
# Usage: upgrade_test.sh HOST PORT  (a running server with the extension installed; REGRESS_DIR
# and REGRESS_BIN as scripts/test.sh sets them).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
host=$1 port=$2
psql_() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$host" -p "$port" -U postgres "$@"; }
work=$(mktemp -d)
chmod 777 "$work"
current=$(extension_version)

# An install script's SQL without its comments (cargo-pgrx annotates each function with the
# Rust source it came from) and blank lines: what must not change once released.
sql_text() { perl -0pe 's{/\*.*?\*/}{}gs; s{^\s*--.*$}{}mg; s{[ \t]+$}{}mg; s{\n\s*\n}{\n}g' "$1"; }

failures=0 checks=0
check() {
    checks=$((checks + 1))
    if [ "$2" = "$3" ]; then echo "ok - $1"; else
        echo "not ok - $1"; echo "  got:  $2"; echo "  want: $3"; failures=$((failures + 1)); fi
}

psql_ -d postgres -c "DROP DATABASE IF EXISTS upgrade_fresh" -c "CREATE DATABASE upgrade_fresh"
psql_ -d upgrade_fresh -c "CREATE EXTENSION pg_eventstore"
psql_ -d upgrade_fresh -f "$REPO_ROOT/scripts/catalog.sql" >"$work/fresh.txt"

# The data as a checksum of the columns every release has.
data="SELECT (SELECT count(*) FROM eventstore.events) || ' events, '
          || (SELECT count(*) FROM eventstore.streams) || ' streams, '
          || (SELECT count(*) FROM eventstore.snapshots) || ' snapshots, '
          || (SELECT md5(string_agg(concat_ws('|', global_position, stream_id, stream_version, event_id,
                                             event_type, data, metadata, recorded_at, transaction_id),
                                    ',' ORDER BY global_position)) FROM eventstore.events) || ' '
          || (SELECT md5(string_agg(concat_ws('|', stream_id, category, version, created_at, updated_at),
                                    ',' ORDER BY stream_id)) FROM eventstore.streams) || ' '
          || (SELECT md5(string_agg(concat_ws('|', stream_id, snapshot_name, stream_version, state, created_at),
                                    ',' ORDER BY stream_id, snapshot_name, stream_version))
              FROM eventstore.snapshots)"

released=0
for script in "$REPO_ROOT"/extension/sql/pg_eventstore--*.sql; do
    name=$(basename "$script" .sql)
    from=${name#pg_eventstore--}
    case $from in *--*) continue ;; esac
    if [ "$from" = "$current" ]; then
        # Released: the build must still generate exactly what was released.
        installed=$("$PG_CONFIG" --sharedir)/extension/pg_eventstore--$current.sql
        check "the $current install script is the one released" \
              "$(sql_text "$installed" | md5sum)" "$(sql_text "$script" | md5sum)"
        continue
    fi
    released=$((released + 1))
    db=upgrade_from_${from//./_}
    psql_ -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    psql_ -d "$db" >/dev/null <<SQL
CREATE EXTENSION pg_eventstore VERSION '$from';
CREATE FUNCTION public.tally(state jsonb, event eventstore.events) RETURNS jsonb
    LANGUAGE sql IMMUTABLE RETURN jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1);
SELECT eventstore.append('order-' || i, '[{"type": "OrderPlaced", "data": {"total": 120.50}},
                                          {"type": "PaymentCaptured", "metadata": {"correlation_id": "c-1"}}]')
FROM generate_series(1, 20) i;
SELECT eventstore.append_event('order-1', 'OrderShipped', '{"carrier": "DHL"}', expected_version => 2,
                               event_id => '7d1c6f3e-8a59-4f57-a3a9-0b1e2f3a4b5c');
SQL
    if [ "$from" = 0.1.0 ]; then
        psql_ -d "$db" >/dev/null <<SQL
-- Snapshots as 0.1.0 let any role with INSERT write them (this library's replay and aggregate
-- refuse to run until the update, below).
INSERT INTO eventstore.snapshots (stream_id, snapshot_name, stream_version, state)
VALUES ('order-1', 'public.tally', 2, '{"n": 1000}'), ('order-2', 'by-hand', 2, '{"status": "paid"}');
-- What the 0.1.0 README told users to grant an application role.
CREATE ROLE upgrade_app;
GRANT USAGE ON SCHEMA eventstore TO upgrade_app;
GRANT SELECT, INSERT ON eventstore.events, eventstore.streams, eventstore.snapshots TO upgrade_app;
GRANT UPDATE ON eventstore.streams TO upgrade_app;
GRANT USAGE ON SEQUENCE eventstore.global_position_seq TO upgrade_app;
CREATE ROLE upgrade_auditor;
GRANT USAGE ON SCHEMA eventstore TO upgrade_auditor;
GRANT SELECT ON eventstore.events, eventstore.streams, eventstore.snapshots TO upgrade_auditor;
SQL
    else
        psql_ -d "$db" >/dev/null <<SQL
-- A snapshot an administrator saved (no fingerprint: trusted by every reducer); this library's
-- save_snapshot refuses to run until the update.
INSERT INTO eventstore.snapshots (stream_id, snapshot_name, stream_version, state, fingerprint)
VALUES ('order-2', 'by-hand', 2, '{"status": "paid"}', NULL);
-- What the README of 0.2.0 on tells users to do for an application role.
CREATE ROLE upgrade_app;
SELECT eventstore.grant_writer('upgrade_app');
CREATE ROLE upgrade_auditor;
SELECT eventstore.grant_reader('upgrade_auditor');
SQL
    fi
    # Between installing this library and ALTER EXTENSION UPDATE, the old catalog's append and
    # append_event (0.2.0's signatures, no schema_version, tags or condition) still append.
    check "$from: before the update, the old append and append_event still append" \
          "$(psql_ -d "$db" -c "SELECT stream_version FROM eventstore.append('between-1', '[{\"type\": \"A\"}]')" \
                -c "SELECT stream_version FROM eventstore.append_event('between-1', 'B', '{}', '{}', 1, NULL)" \
                | tr '\n' ' ')" "1 2 "
    before=$(psql_ -d "$db" -c "$data")
    check "$from: before the update, replay refuses clearly (55000)" \
          "$(psql_ -d "$db" -c "SELECT eventstore.replay('order-1', 'public.tally'::regproc)" 2>&1 | head -1)" \
          "ERROR:  pg_eventstore's library is version $current but this database's extension is at version $from"
    psql_ -d "$db" -c "ALTER EXTENSION pg_eventstore UPDATE"
    check "$from: updates to $current" \
          "$(psql_ -d "$db" -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_eventstore'")" "$current"
    check "$from: events, streams and snapshots are untouched" "$(psql_ -d "$db" -c "$data")" "$before"
    if [ "$from" = 0.1.0 ]; then
        check "$from: replay ignores the unverified snapshots 0.1.0 kept" \
              "$(psql_ -d "$db" -c "SELECT eventstore.replay('order-1', 'public.tally'::regproc)")" '{"n": 3}'
    else
        check "$from: replay folds as before" \
              "$(psql_ -d "$db" -c "SELECT eventstore.replay('order-1', 'public.tally'::regproc)")" '{"n": 3}'
        check "$from: the administrator's snapshot is still loaded" \
              "$(psql_ -d "$db" -c "SELECT state FROM eventstore.load_snapshot('order-2', 'by-hand')")" '{"status": "paid"}'
    fi
    check "$from: the application role still appends, through the API" \
          "$(psql_ -d "$db" -c "SET ROLE upgrade_app" \
                -c "SELECT stream_version FROM eventstore.append_event('order-1', 'OrderDelivered', '{}')")" "4"
    check "$from: the application role writes no table" \
          "$(psql_ -d "$db" -c "SET ROLE upgrade_app" \
                -c "INSERT INTO eventstore.streams (stream_id, category, version) VALUES ('x', 'x', 9)" 2>&1 \
                | grep -o 'permission denied for table streams')" "permission denied for table streams"
    check "$from: the read-only role still reads" \
          "$(psql_ -d "$db" -c "SET ROLE upgrade_auditor" \
                -c "SELECT count(*) FROM eventstore.read_stream('order-1')")" "4"
    check "$from: the read-only role may not append" \
          "$(psql_ -d "$db" -c "SET ROLE upgrade_auditor" \
                -c "SELECT eventstore.append_event('order-1', 'X', '{}')" 2>&1)" \
          "ERROR:  permission denied for function append_event"
    check "$from: the application role appends to several streams under a condition" \
          "$(psql_ -d "$db" -c "SET ROLE upgrade_app" \
                -c "SELECT stream_version FROM eventstore.append_multi('[{\"stream_id\": \"multi-1\", \"events\": [{\"type\": \"A\", \"schema_version\": 1, \"tags\": [\"t:1\"]}]}]', '{\"fail_if_events_match\": {\"items\": [{\"tags\": [\"t:1\"]}]}}')")" "1"
    check "$from: the read-only role runs read_query, and may not append_multi" \
          "$(psql_ -d "$db" -c "SET ROLE upgrade_auditor" \
                -c "SELECT jsonb_array_length(eventstore.read_query('{\"items\": [{\"tags\": [\"t:1\"]}]}')->'events')" \
                -c "SELECT eventstore.append_multi('[]')" 2>&1 | tr '\n' ' ')" \
          "1 ERROR:  permission denied for function append_multi "
    check "$from: appends continue the sequence without reusing a position" \
          "$(psql_ -d "$db" -c "SELECT count(DISTINCT global_position) = count(*) FROM eventstore.events")" "t"
    # A dump of the updated database keeps the roles' grants (they are not the extension's
    # initial privileges).
    psql_ -d postgres -c "DROP DATABASE IF EXISTS ${db}_restored" -c "CREATE DATABASE ${db}_restored"
    "$PG_BIN/pg_dump" -h "$host" -p "$port" -U postgres -Fc -f "$work/$db.dump" "$db"
    "$PG_BIN/pg_restore" -h "$host" -p "$port" -U postgres -d "${db}_restored" --exit-on-error "$work/$db.dump"
    check "$from: after a dump and restore of the updated database, the application role still appends" \
          "$(psql_ -d "${db}_restored" -c "SET ROLE upgrade_app" \
                -c "SELECT stream_version FROM eventstore.append_event('order-1', 'OrderReturned', '{}')")" "5"
    check "$from: ... and the read-only role still reads" \
          "$(psql_ -d "${db}_restored" -c "SET ROLE upgrade_auditor" \
                -c "SELECT count(*) FROM eventstore.read_stream('order-1')")" "5"
    psql_ -d postgres -c "DROP DATABASE ${db}_restored"
    psql_ -d "$db" -c "SELECT eventstore.revoke_access('upgrade_app')" \
          -c "SELECT eventstore.revoke_access('upgrade_auditor')" >/dev/null
    # The roles the update migrated can be dropped: on PostgreSQL 17 and later the 0.1.0 -> 0.2.0
    # script left "initial privileges" dependencies (pg_shdepend) behind that 0.2.0 -> 0.3.0
    # removes.
    psql_ -d "$db" -c "DROP ROLE upgrade_app, upgrade_auditor" >/dev/null
    psql_ -d "$db" -f "$REPO_ROOT/scripts/catalog.sql" >"$work/upgraded.txt"
    if diff -u "$work/fresh.txt" "$work/upgraded.txt" >"$work/catalog.diff"; then
        check "$from: the catalog equals a fresh $current install" same same
    else
        check "$from: the catalog equals a fresh $current install" "differs (diff below)" same
        cat "$work/catalog.diff"
    fi

    # The regress suite on a database updated from this release (its first files use the
    # installed extension as it is).
    regress_db=regress_from_${from//./_}
    psql_ -d postgres -c "DROP DATABASE IF EXISTS $regress_db" -c "CREATE DATABASE $regress_db"
    psql_ -d "$regress_db" -c "CREATE EXTENSION pg_eventstore VERSION '$from'" \
          -c "ALTER EXTENSION pg_eventstore UPDATE"
    if "$REGRESS_BIN" --bindir="$PG_BIN" --host="$host" --port="$port" --user=postgres --use-existing \
        --dbname="$regress_db" --inputdir="$REPO_ROOT/sql/regress" --outputdir="$work/regress-$from" \
        --schedule="$REPO_ROOT/sql/regress/schedule" >"$work/regress-$from.log" 2>&1; then
        check "$from: the regress suite passes on the updated database" passed passed
    else
        check "$from: the regress suite passes on the updated database" failed passed
        cat "$work/regress-$from.log" "$work/regress-$from/regression.diffs" 2>/dev/null || true
    fi
    psql_ -d postgres -c "DROP DATABASE $db" -c "DROP DATABASE $regress_db"
done
check "at least one earlier release is tested" "$([ "$released" -gt 0 ] && echo yes)" yes
psql_ -d postgres -c "DROP DATABASE upgrade_fresh"
rm -rf "$work"
echo "upgrade: $((checks - failures)) passed, $failures failed"
[ "$failures" = 0 ]
