#!/usr/bin/env bash
# pg_upgrade from PostgreSQL 15 to 18 under a store in use: a 15 cluster with events in many
# streams, snapshots, a read_all consumer part-way through and the worker keeping the order
# read models (examples/orders-worker.toml); the worker is stopped, more events are appended,
# the cluster is upgraded with pg_upgrade into a fresh 18 cluster and started. Then: events,
# streams and snapshots are byte for byte what they were, appends continue with new positions,
# the consumer continues from its cursor without missing or repeating an event, and the worker
# (whose slot pg_upgrade does not carry over from 15) recovers by itself, from its checkpoints
# through the event table and without a rebuild, with events appended
# before and while it runs on 18, until its read models equal what the events say.
# Usage: pg_upgrade_test.sh  (as root or as postgres; the extension installed into both majors;
# EVENTSTORE_WORKER_BIN to use a built worker). The procedure is docs/operations.md's.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
# pg_upgrade wants the same encoding and locale in both clusters: give both initdbs the same.
export LC_ALL=C.UTF-8

select_pg 15
OLD_BIN=$PG_BIN
select_pg 18
NEW_BIN=$PG_BIN
for bin in "$OLD_BIN" "$NEW_BIN"; do
    [ -f "$("$bin/pg_config" --sharedir)/extension/pg_eventstore.control" ] \
        || die "the extension is not installed into $bin/.. (scripts/setup.sh, then install_extension per major)"
done
worker_binary

work=$(mktemp -d /tmp/pg_upgrade_test.XXXXXX)
chmod 755 "$work"
[ "$(id -u)" = 0 ] && chown postgres: "$work"
port=$(free_port)
worker_pid=
cleanup() {
    [ -n "$worker_pid" ] && kill "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
    PG_BIN=$NEW_BIN stop_cluster "$work/pg18"
    PG_BIN=$OLD_BIN stop_cluster "$work/pg15"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql_() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d app "$@"; }

failures=0 checks=0
check() {
    checks=$((checks + 1))
    if [ "$2" = "$3" ]; then echo "ok - $1"; else
        echo "not ok - $1"; echo "  got:  $2"; echo "  want: $3"; failures=$((failures + 1)); fi
}

# orders FROM TO: SQL for orders FROM..TO of seven customers, one statement (one source
# transaction) per step: placed; paid (4 in 5, some in the same call as the placement); then
# shipped (every third paid one) or, for every fifth, cancelled. Every tenth pair of orders is
# placed in one transaction across two streams.
orders() {
    local i total c
    for ((i = $1; i <= $2; i++)); do
        total="$((i % 90 + 10)).50" c="c-$((i % 7))"
        local placed="{\"type\": \"OrderPlaced\", \"data\": {\"order_id\": \"$i\", \"customer_id\": \"$c\", \"total\": $total}}"
        local paid="{\"type\": \"PaymentCaptured\", \"data\": {\"order_id\": \"$i\", \"customer_id\": \"$c\", \"amount\": $total}}"
        if ((i % 10 == 0)); then
            echo "BEGIN;"
            echo "SELECT count(*) FROM eventstore.append('order-$i', '[$placed]', expected_version => 0);"
            echo "SELECT count(*) FROM eventstore.append('order-$((i + 100000))', '[{\"type\": \"OrderNoted\", \"data\": {\"order_id\": \"$i\"}}]');"
            echo "COMMIT;"
        elif ((i % 4 == 1 && i % 5 != 0)); then
            echo "SELECT count(*) FROM eventstore.append('order-$i', '[$placed, $paid]', expected_version => 0);"
            paid=
        else
            echo "SELECT count(*) FROM eventstore.append('order-$i', '[$placed]', expected_version => 0);"
        fi
        if ((i % 5 == 0)); then
            echo "SELECT count(*) FROM eventstore.append_event('order-$i', 'OrderCancelled', '{\"order_id\": \"$i\", \"customer_id\": \"$c\", \"reason\": \"changed mind\"}');"
            continue
        fi
        [ -n "$paid" ] && echo "SELECT count(*) FROM eventstore.append('order-$i', '[$paid]');"
        ((i % 3 == 0)) && echo "SELECT count(*) FROM eventstore.append_event('order-$i', 'OrderShipped', '{\"order_id\": \"$i\", \"customer_id\": \"$c\", \"carrier\": \"DHL\"}');"
    done
    return 0
}
append_orders() { orders "$1" "$2" | psql_ >/dev/null; }

# The whole store, row by row: what must come through the upgrade unchanged.
store_dump() {
    local t
    for t in "events ORDER BY global_position" "streams ORDER BY stream_id" \
             "snapshots ORDER BY stream_id, snapshot_name, stream_version"; do
        psql_ -c "COPY (SELECT * FROM eventstore.$t) TO STDOUT"
    done
}

start_worker() {
    "$WORKER_BIN" run --config "$work/worker.toml" >>"$work/worker-$1.log" 2>&1 &
    worker_pid=$!
}
stop_worker() {
    kill -TERM "$worker_pid"
    wait "$worker_pid" || die "the worker exited with status $? (log: $work/worker-$1.log)"
    worker_pid=
}
# caught_up TIMEOUT: every projection reflects everything committed so far (wait_for on a token
# taken now); prints true or false per projection.
caught_up() {
    local token
    token=$(psql_ -c "SELECT pg_current_wal_lsn()")
    psql_ -c "SELECT string_agg(eventstore_worker.wait_for(p, '$token', '$1')::text, ' ' ORDER BY p)
              FROM unnest('{customer_revenue,fulfillment_queue,order_summary}'::text[]) p"
}

# What the three read models must hold, computed from the events alone (the handlers of
# examples/orders-worker.toml, folded by SQL): a missed or doubled event shows.
expected_models="
CREATE OR REPLACE VIEW public.expected_order_summary AS
WITH e AS (SELECT data->>'order_id' AS order_id, * FROM eventstore.events
            WHERE event_type IN ('OrderPlaced', 'PaymentCaptured', 'OrderShipped', 'OrderCancelled')),
     last AS (SELECT DISTINCT ON (order_id) * FROM e ORDER BY order_id, stream_version DESC)
SELECT p.order_id, p.data->>'customer_id' AS customer_id,
       CASE l.event_type WHEN 'OrderPlaced' THEN 'placed' WHEN 'PaymentCaptured' THEN 'paid'
                         WHEN 'OrderShipped' THEN 'shipped' ELSE 'cancelled' END AS status,
       (p.data->>'total')::numeric AS total,
       coalesce((SELECT sum((x.data->>'amount')::numeric) FROM e x
                  WHERE x.order_id = p.order_id AND x.event_type = 'PaymentCaptured'), 0) AS paid,
       (SELECT count(*) FROM e x WHERE x.order_id = p.order_id) AS event_count,
       l.global_position AS last_position, l.recorded_at AS updated_at
  FROM e p JOIN last l USING (order_id) WHERE p.event_type = 'OrderPlaced';
CREATE OR REPLACE VIEW public.expected_customer_revenue AS
SELECT data->>'customer_id' AS customer_id,
       count(*) FILTER (WHERE event_type = 'OrderPlaced') AS orders,
       coalesce(sum((data->>'amount')::numeric) FILTER (WHERE event_type = 'PaymentCaptured'), 0) AS revenue,
       count(*) FILTER (WHERE event_type = 'OrderCancelled') AS cancelled
  FROM eventstore.events WHERE event_type IN ('OrderPlaced', 'PaymentCaptured', 'OrderCancelled')
 GROUP BY 1;
CREATE OR REPLACE VIEW public.expected_fulfillment_queue AS
SELECT order_id, data->>'customer_id' AS customer_id, recorded_at AS paid_at
  FROM (SELECT DISTINCT ON (data->>'order_id') data->>'order_id' AS order_id, *
          FROM eventstore.events WHERE event_type IN ('PaymentCaptured', 'OrderShipped', 'OrderCancelled')
         ORDER BY data->>'order_id', stream_version DESC) l
 WHERE event_type = 'PaymentCaptured';"
# rows_differing TABLE: rows in TABLE or in its expected_ view but not in both.
rows_differing() {
    psql_ -c "SELECT count(*) FROM ((TABLE $1 EXCEPT ALL TABLE expected_$1)
                                    UNION ALL (TABLE expected_$1 EXCEPT ALL TABLE $1)) d"
}
check_read_models() {
    local t
    for t in order_summary customer_revenue fulfillment_queue; do
        check "$1: $t equals the events folded from scratch ($(psql_ -c "SELECT count(*) FROM $t") rows)" \
              "$(rows_differing "$t")" 0
    done
}

# consume XID POS: a read_all consumer from cursor (XID, POS) to the end, 50 events a page;
# prints "transaction_id|global_position" per event.
consume() {
    local xid=$1 pos=$2 page last
    while page=$(psql_ -c "SELECT transaction_id, global_position FROM eventstore.read_all('$xid', $pos, 50)") \
          && [ -n "$page" ]; do
        echo "$page"
        last=$(tail -1 <<<"$page")
        xid=${last%|*} pos=${last#*|}
    done
}

# --- PostgreSQL 15, the store in use ---------------------------------------------------------
select_pg 15
say "PostgreSQL 15 cluster in $work/pg15 on port $port"
start_cluster "$work/pg15" "$port"
psql_ -d postgres -c "CREATE DATABASE app"
psql_ -c "CREATE EXTENSION pg_eventstore"
"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d app \
    -f "$REPO_ROOT/examples/orders.sql" >/dev/null
append_orders 1 100
{
    printf '[source]\ndsn = "host=127.0.0.1 port=%s dbname=app user=postgres"\n\n' "$port"
    sed -n '/^\[\[projection\]\]/,$p' "$REPO_ROOT/examples/orders-worker.toml"
} >"$work/worker.toml"
"$WORKER_BIN" check --config "$work/worker.toml" >/dev/null || die "the worker rejects its configuration"
say "worker on 15: builds the read models from the events so far, then follows the stream"
start_worker 15
append_orders 101 160
check "15: the worker has caught up" "$(caught_up 120s)" "true true true"
psql_ -c "$expected_models"
check_read_models 15

# Snapshots: by aggregate (a reducer of ours, and eventstore.merge) and one saved by hand.
# public.folds counts the events a reducer folds, to see whether replay starts from a snapshot.
psql_ >/dev/null <<'SQL'
CREATE SEQUENCE public.folds;
CREATE FUNCTION public.order_state(state jsonb, event eventstore.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('public.folds');
    RETURN state || jsonb_build_object('status', event.event_type,
                                       'events', coalesce((state->>'events')::int, 0) + 1);
END $$;
SELECT count(*) FROM generate_series(1, 40) i,
       LATERAL eventstore.aggregate('order-' || i, 'public.order_state'::regproc, snapshot_every => 1);
SELECT count(*) FROM generate_series(41, 60) i,
       LATERAL eventstore.aggregate('order-' || i, 'eventstore.merge'::regproc, snapshot_every => 1);
SELECT eventstore.save_snapshot('order-1001', 'by-hand', 2, '{"from": "the snapshot"}');
SQL
replays="SELECT string_agg(eventstore.replay('order-' || i, 'public.order_state'::regproc)::text
                           || eventstore.replay('order-' || i, 'eventstore.merge'::regproc)::text, ',' ORDER BY i)
           FROM generate_series(1, 60) i"
folds_of_replay() {
    psql_ -c "SELECT setval('public.folds', 1, false)" >/dev/null
    psql_ -c "SELECT count(eventstore.replay('order-' || i, 'public.order_state'::regproc)) FROM generate_series(1, 40) i" >/dev/null
    psql_ -c "SELECT last_value - 1 + (is_called::int) FROM public.folds"
}
folds_before=$(folds_of_replay)
check "15: replay of 40 snapshotted streams folds no event (starts from their snapshots)" "$folds_before" 0

# The consumer reads everything so far and keeps its cursor.
consume 0 0 >"$work/consumed-before"
cursor=$(tail -1 "$work/consumed-before")
say "read_all consumer: $(wc -l <"$work/consumed-before") events read, cursor (transaction_id|global_position) = $cursor"
append_orders 161 200
check "15: the worker has caught up again" "$(caught_up 120s)" "true true true"
checkpoint_15=$(psql_ -c "SELECT max(checkpoint_lsn) FROM eventstore_worker.projections")
stop_worker 15
say "worker stopped at checkpoint $checkpoint_15; appending while it is down"
append_orders 201 230

before_dump=$(store_dump | md5sum)
before_counts=$(psql_ -c "SELECT (SELECT count(*) FROM eventstore.events) || ' events, '
                                 || (SELECT count(*) FROM eventstore.streams) || ' streams, '
                                 || (SELECT count(*) FROM eventstore.snapshots) || ' snapshots'")
max_before=$(psql_ -c "SELECT max(global_position) || ' ' || max(transaction_id) FROM eventstore.events")
replays_before=$(psql_ -c "$replays")
extversion=$(psql_ -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_eventstore'")
say "15 before the upgrade: $before_counts; max global_position, transaction_id: $max_before"
psql_ -c "SELECT slot_name, plugin, confirmed_flush_lsn FROM pg_replication_slots" | sed 's/^/    slot on 15: /' >&2
# Debian's PostgreSQL 15.20 build records an attribute version (pg_attver=N) in the options of
# every column; PostgreSQL 18.6, the newest 18 here, refuses that option when pg_upgrade restores
# the schema ("unrecognized parameter"). Upstream PostgreSQL 15 has no such option, so strip it
# from the user tables (the only ones pg_upgrade dumps) to upgrade what a standard 15 would hold.
# Nothing else in the catalogs changes; every check below runs on the upgraded data as is.
for db in postgres app; do
    "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$db" -c "
        UPDATE pg_catalog.pg_attribute
        SET attoptions = NULLIF(ARRAY(SELECT o FROM pg_catalog.unnest(attoptions) AS o
                                      WHERE o NOT LIKE 'pg\_attver=%'), '{}')
        WHERE attrelid >= 16384 AND attoptions::text LIKE '%pg\_attver=%'"
done
stop_cluster "$work/pg15"

# --- pg_upgrade to 18 ------------------------------------------------------------------------
select_pg 18
say "initdb PostgreSQL 18 (without data checksums, like the 15 cluster) and pg_upgrade"
install -d -o postgres -g postgres "$work/pg18" 2>/dev/null || mkdir -p "$work/pg18"
as_postgres "$NEW_BIN/initdb" -D "$work/pg18/data" -U postgres -A trust --no-sync --no-data-checksums \
    >"$work/pg18/initdb.log" 2>&1 || { cat "$work/pg18/initdb.log"; die "initdb 18 failed"; }
# pg_upgrade starts the old server with its postgresql.conf; this one got wal_level=logical on
# the command line, and a server with a logical slot does not start without it.
t0=$(date +%s.%N)
if ! (cd "$work" && as_postgres "$NEW_BIN/pg_upgrade" --old-bindir="$OLD_BIN" --new-bindir="$NEW_BIN" \
        --old-datadir="$work/pg15/data" --new-datadir="$work/pg18/data" --username=postgres \
        --old-options="-c wal_level=logical" --old-port="$(free_port)" --new-port="$(free_port)" --socketdir="$work" --copy \
        >"$work/pg_upgrade.log" 2>&1); then
    cat "$work/pg_upgrade.log"
    find "$work/pg18/data/pg_upgrade_output.d" -name '*.log' -exec grep -H -B 3 -A 6 -E 'ERROR|FATAL' {} + 2>/dev/null || true
    if grep -rqs 'unrecognized parameter "pg_attver"' "$work/pg18/data/pg_upgrade_output.d"; then
        die "pg_upgrade failed: $("$OLD_BIN/postgres" --version) stores attribute versions (pg_attver) on every column, and $("$NEW_BIN/postgres" --version) does not know them: the new cluster needs a PostgreSQL 18 minor release at least as recent as the 15 one (docs/operations.md, Known issues)"
    fi
    die "pg_upgrade failed"
fi
say "pg_upgrade took $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s; its last lines:"
tail -n 4 "$work/pg_upgrade.log" | sed 's/^/    /' >&2
as_postgres "$NEW_BIN/pg_ctl" -D "$work/pg18/data" -l "$work/pg18/server.log" -w start -o \
    "-c wal_level=logical -c max_wal_senders=10 -c max_replication_slots=10 -c listen_addresses=127.0.0.1 -p $port -k $work/pg18" \
    >/dev/null || { cat "$work/pg18/server.log"; die "PostgreSQL 18 did not start"; }
"$NEW_BIN/vacuumdb" -h 127.0.0.1 -p "$port" -U postgres --all --analyze-in-stages --missing-stats-only >/dev/null

# --- PostgreSQL 18: the store ----------------------------------------------------------------
check "18: the server is PostgreSQL 18" "$(psql_ -c "SELECT current_setting('server_version_num')::int / 10000")" 18
check "18: the extension is at the same version" \
      "$(psql_ -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_eventstore'")" "$extversion"
check "18: events, streams and snapshots are row for row what 15 had ($before_counts)" \
      "$(store_dump | md5sum)" "$before_dump"
check "18: replay gives every snapshotted stream the state it had on 15" "$(psql_ -c "$replays")" "$replays_before"
folds_after=$(folds_of_replay)
# The fingerprint of a reducer's snapshot includes the function's OID, which pg_upgrade does
# not keep (docs/operations.md): replay then folds from the first event, with the same result.
echo "# 18: replay of the 40 streams snapshotted by public.order_state folds $folds_after events (0 on 15)"
check "18: replay starts from snapshots saved by eventstore.merge and by hand" \
      "$(psql_ -c "SELECT eventstore.replay('order-1001', 'eventstore.merge'::regproc, snapshot_name => 'by-hand')->>'from'")" \
      "the snapshot"
check "18: the worker's slot did not come through pg_upgrade" \
      "$(psql_ -c "SELECT count(*) FROM pg_replication_slots")" 0
check "18: WAL continues after the worker's checkpoint ($checkpoint_15)" \
      "$(psql_ -c "SELECT pg_current_wal_lsn() > '$checkpoint_15'")" t

say "appending on 18 before the worker starts"
append_orders 231 260
first_new=$(psql_ -c "SELECT min(global_position) || ' ' || min(transaction_id) FROM eventstore.events
                      WHERE global_position > ${max_before% *}")
check "18: appends continue without reusing a position" \
      "$(psql_ -c "SELECT ${first_new% *} > ${max_before% *}
                          AND (SELECT count(DISTINCT global_position) = count(*) FROM eventstore.events)")" t
check "18: new transactions sort after the old ones (transaction ids continue)" \
      "$(psql_ -c "SELECT '${first_new#* }'::xid8 > '${max_before#* }'::xid8")" t

say "worker on 18; appending while it recovers"
start_worker 18
append_orders 261 300
check "18: the worker has caught up by itself" "$(caught_up 300s)" "true true true"
append_orders 301 330
check "18: ... and follows the stream" "$(caught_up 120s)" "true true true"
check "18: every projection is running" \
      "$(psql_ -c "SELECT string_agg(name || '=' || status, ' ' ORDER BY name) FROM eventstore_worker.projections")" \
      "customer_revenue=running fulfillment_queue=running order_summary=running"
check "18: the worker created its slot anew" \
      "$(psql_ -c "SELECT string_agg(slot_name || ' ' || plugin, ',') FROM pg_replication_slots WHERE NOT temporary")" \
      "eventstore_worker pgoutput"
check_read_models 18
plain_log=$(sed 's/\x1b\[[0-9;]*m//g' "$work/worker-18.log")
check "18: the worker recreated its slot and read what it missed from the event table" \
      "$(grep -c "recreated the replication slot" <<<"$plain_log")" 1
check "18: ... without rebuilding a projection" \
      "$(grep -cE "rebuilt and swapped in|rebuilding every projection" <<<"$plain_log")" 0
say "how the worker recovered (its log on 18):"
grep -E "created replication slot|recreat|rebuilding every projection|projection will not follow|resuming|caught up|swapped|built" \
    "$work/worker-18.log" | sed 's/\x1b\[[0-9;]*m//g; s/^/    /' >&2 || true
"$WORKER_BIN" status --config "$work/worker.toml" | sed 's/^/    /' >&2
stop_worker 18

# The consumer continues from the cursor it kept across the upgrade.
consume "${cursor%|*}" "${cursor#*|}" >"$work/consumed-after"
all=$(psql_ -c "SELECT count(*) FROM eventstore.events")
check "read_all after the cursor: every later event, once, including those appended on 18" \
      "$(sort -t'|' -k2n "$work/consumed-before" "$work/consumed-after" | uniq | cut -d'|' -f2 | md5sum)" \
      "$(psql_ -c "SELECT global_position FROM eventstore.events ORDER BY global_position" | md5sum)"
check "read_all after the cursor repeats nothing ($(wc -l <"$work/consumed-after") events)" \
      "$(($(wc -l <"$work/consumed-before") + $(wc -l <"$work/consumed-after")))" "$all"
check "read_all after the cursor returns only events after it" \
      "$(awk -F'|' -v x="${cursor%|*}" -v p="${cursor#*|}" '$1 < x || ($1 == x && $2 <= p)' "$work/consumed-after" | wc -l)" 0

echo "pg_upgrade 15 -> 18: $((checks - failures)) passed, $failures failed"
[ "$failures" = 0 ]
