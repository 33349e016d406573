#!/usr/bin/env bash
# The main job: a throwaway PostgreSQL with the extension and the worker beside it, the order
# example appended, a concurrent-writer conflict, and the read models the worker keeps; then the
# worker's slot lost while it is down (it catches up without a rebuild), a unique e-mail address
# kept by an append condition and a transfer appended to two streams atomically.
#
#   bash scripts/demo.sh                 # starts its own PostgreSQL 18 (wal_level=logical)
#   bash scripts/demo.sh --pg 15         # ... or PostgreSQL 15
#   bash scripts/demo.sh --keep          # ... and leaves it running afterwards
#   bash scripts/demo.sh --host H --port P [--user U]
#                                        # use an existing server instead (superuser,
#                                        # wal_level=logical, extension installable there)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

host="" port="" user=postgres keep=0 major=18
while [ $# -gt 0 ]; do
    case $1 in
        --pg) major=$2; shift 2 ;;
        --host) host=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --user) user=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        *) die "unknown option $1 (see the comment at the top of $0)" ;;
    esac
done

case $major in 15 | 18) select_pg "$major" ;; *) die "--pg takes 15 or 18, not '$major'" ;; esac
bash scripts/setup.sh --pg "$major"
install_extension
say "building eventstore-worker"
cargo build --release -q -p eventstore-worker
worker_bin=$REPO_ROOT/target/release/eventstore-worker

work=$(mktemp -d /tmp/pg_eventstore-demo.XXXXXX)
chmod 755 "$work"
own_cluster=0
if [ -z "$host" ]; then
    own_cluster=1
    host=$work/cluster port=$(free_port)
    say "starting a throwaway PostgreSQL $PG_MAJOR in $host (port $port)"
    start_cluster "$host" "$port"
fi
worker_pid=""
finish() {
    [ -n "$worker_pid" ] && kill -TERM "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
    if [ "$own_cluster" = 1 ] && [ "$keep" = 0 ]; then stop_cluster "$host"; rm -rf "$work"; fi
    return 0
}
trap finish EXIT

db=orders_demo
psql_() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$host" -p "$port" -U "$user" "$@"; }
psql_ -d postgres -c "DROP DATABASE IF EXISTS $db" 2>/dev/null
psql_ -d postgres -c "CREATE DATABASE $db"
psql_ -d $db -c "CREATE EXTENSION pg_eventstore"
# The order service appends with nothing but grant_writer; an auditor only reads. (With --host,
# the roles are the server's, so they are created only when missing.)
psql_ -d $db -c "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_app') THEN CREATE ROLE orders_app; END IF;
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_auditor') THEN CREATE ROLE orders_auditor; END IF;
    END \$\$" -c "SELECT eventstore.grant_writer('orders_app')" -c "SELECT eventstore.grant_reader('orders_auditor')" >/dev/null

say "starting eventstore-worker (read models: order_summary, customer_revenue, fulfillment_queue)"
sed "s|^dsn = \"host=/var/run/postgresql dbname=app user=eventstore_worker\"|dsn = \"host=$host port=$port dbname=$db user=$user\"|" \
    examples/orders-worker.toml >"$work/worker.toml"
grep -q "port=$port" "$work/worker.toml" || die "could not point examples/orders-worker.toml at the demo database"
RUST_LOG=${RUST_LOG:-info} "$worker_bin" run --config "$work/worker.toml" >"$work/worker.log" 2>&1 &
worker_pid=$!
# Wait until the worker streams, so the events below flow through the live path (events
# appended before would be built from the table instead).
for _ in $(seq 1 300); do
    slot=$(psql_ -d $db -At -c "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'eventstore_worker' AND active")
    [ "$slot" = 1 ] && break
    kill -0 "$worker_pid" 2>/dev/null || { cat "$work/worker.log"; die "the worker exited"; }
    sleep 0.1
done
[ "$slot" = 1 ] || die "the worker did not start streaming"

echo
echo "--- The order service runs as role orders_app, granted with eventstore.grant_writer('orders_app') alone"
PGOPTIONS="-c role=orders_app" psql_ -d $db -f examples/orders.sql

echo
echo "--- Writes go only through the API: the service cannot forge history, the auditor cannot append"
PGOPTIONS="-c role=orders_app" psql_ -d $db -c "INSERT INTO eventstore.events
    (stream_id, stream_version, event_id, event_type, recorded_at)
    VALUES ('order-1001', 9, gen_random_uuid(), 'RefundIssued', '2020-01-01')" 2>&1 | sed 's/^psql:[^ ]* //' || true
PGOPTIONS="-c role=orders_auditor" psql_ -d $db -c "SELECT eventstore.append_event('order-1001',
    'RefundIssued', '{}')" 2>&1 | sed 's/^psql:[^ ]* //' || true
PGOPTIONS="-c role=orders_auditor" psql_ -d $db -At -c "SELECT 'the auditor reads order-1001: '
    || string_agg(event_type, ', ' ORDER BY stream_version) FROM eventstore.read_stream('order-1001')"

echo
echo "--- Two clerks act on order-1004 at once, both having read version 2"
PGOPTIONS="-c role=orders_app" psql_ -d $db -At -c "BEGIN;
    SELECT 'clerk A appended version ' || stream_version FROM eventstore.append_event('order-1004',
        'OrderShipped', '{\"order_id\": \"1004\", \"customer_id\": \"linus\", \"carrier\": \"FedEx\"}',
        expected_version => 2);
    SELECT pg_sleep(1); COMMIT;" &
clerk_a=$!
sleep 0.3
PGOPTIONS="-c role=orders_app" psql_ -d $db -At -c "DO \$\$ BEGIN
    PERFORM eventstore.append_event('order-1004', 'OrderCancelled',
        '{\"order_id\": \"1004\", \"customer_id\": \"linus\", \"reason\": \"too slow\"}', expected_version => 2);
  EXCEPTION WHEN SQLSTATE 'ES001' THEN
    RAISE NOTICE 'clerk B was refused (SQLSTATE %): %', SQLSTATE, SQLERRM;
  END \$\$;" 2>&1 | sed 's/^psql:[^ ]* NOTICE:  /NOTICE: /'
wait "$clerk_a"

echo
echo "--- Waiting for the worker to apply every committed event"
expected=$(psql_ -d $db -At -c "SELECT count(*) FROM eventstore.events")
for _ in $(seq 1 300); do
    applied=$(psql_ -d $db -At -c "SELECT coalesce(sum(event_count), 0) FROM order_summary" 2>/dev/null || echo 0)
    [ "$applied" = "$expected" ] && break
    kill -0 "$worker_pid" 2>/dev/null || { cat "$work/worker.log"; die "the worker exited"; }
    sleep 0.1
done
[ "$applied" = "$expected" ] || { tail -20 "$work/worker.log"; die "read models did not catch up ($applied of $expected events)"; }

psql_ -d $db <<'SQL'
\pset footer off
\echo '--- Read model: order_summary'
SELECT order_id, customer_id, status, total, paid, event_count FROM order_summary ORDER BY order_id;
\echo '--- Read model: customer_revenue'
SELECT * FROM customer_revenue ORDER BY customer_id;
\echo '--- Read model: fulfillment_queue'
SELECT * FROM fulfillment_queue ORDER BY 1;
\echo '--- Worker state'
SELECT name, status, checkpoint_lsn, last_error FROM eventstore_worker.projections ORDER BY name;
SQL
echo
echo "--- The worker is down while events are appended, and its slot is lost meanwhile (as when"
echo "    max_slot_wal_keep_size invalidates it): it recreates the slot and catches up from its"
echo "    checkpoints through eventstore.events, without rebuilding a read model"
kill -TERM "$worker_pid"; wait "$worker_pid" || true
PGOPTIONS="-c role=orders_app" psql_ -d $db -At -c "SELECT 'appended while the worker is down: ' || count(*) || ' events'
    FROM eventstore.append('order-1006', '[
        {\"type\": \"OrderPlaced\", \"data\": {\"order_id\": \"1006\", \"customer_id\": \"grace\", \"total\": 42.00}},
        {\"type\": \"PaymentCaptured\", \"data\": {\"order_id\": \"1006\", \"customer_id\": \"grace\", \"amount\": 42.00}}]')"
psql_ -d $db -At -c "SELECT 'slot dropped: ' || slot_name FROM pg_replication_slots, pg_drop_replication_slot(slot_name)
    WHERE slot_name = 'eventstore_worker'"
RUST_LOG=${RUST_LOG:-info} "$worker_bin" run --config "$work/worker.toml" >"$work/worker-2.log" 2>&1 &
worker_pid=$!
expected=$(psql_ -d $db -At -c "SELECT count(*) FROM eventstore.events")
for _ in $(seq 1 300); do
    applied=$(psql_ -d $db -At -c "SELECT coalesce(sum(event_count), 0) FROM order_summary" 2>/dev/null || echo 0)
    running=$(psql_ -d $db -At -c "SELECT count(*) FROM eventstore_worker.projections WHERE status = 'running'")
    [ "$applied" = "$expected" ] && [ "$running" = 3 ] && break
    kill -0 "$worker_pid" 2>/dev/null || { cat "$work/worker-2.log"; die "the worker exited"; }
    sleep 0.1
done
[ "$applied" = "$expected" ] || { tail -20 "$work/worker-2.log"; die "read models did not catch up ($applied of $expected events)"; }
sed 's/\x1b\[[0-9;]*m//g' "$work/worker-2.log" \
    | grep -E "recreat|caught up|rebuilt|rebuilding every" | sed -E 's/^[^ ]+ +//; s/ eventstore_worker::[a-z_:]+: / /'
"$worker_bin" status --config "$work/worker.toml"

echo
echo "--- Consistency beyond one stream (docs/dcb.md): an e-mail address belongs to one account"
PGOPTIONS="-c role=orders_app" psql_ -d $db -At -c "SELECT 'account-ada registered at global position ' || global_position
    FROM eventstore.append('account-ada', '[{\"type\": \"AccountRegistered\", \"data\": {\"email\": \"ada@example.com\"}, \"tags\": [\"email:ada@example.com\"]}]',
        condition => '{\"fail_if_events_match\": {\"items\": [{\"types\": [\"AccountRegistered\"], \"tags\": [\"email:ada@example.com\"]}]}}')"
PGOPTIONS="-c role=orders_app" psql_ -d $db -At -c "DO \$\$ BEGIN
    PERFORM eventstore.append('account-ada2', '[{\"type\": \"AccountRegistered\", \"data\": {\"email\": \"ada@example.com\"}, \"tags\": [\"email:ada@example.com\"]}]',
        condition => '{\"fail_if_events_match\": {\"items\": [{\"types\": [\"AccountRegistered\"], \"tags\": [\"email:ada@example.com\"]}]}}');
  EXCEPTION WHEN SQLSTATE 'ES005' THEN
    RAISE NOTICE 'a second account for the same address was refused (SQLSTATE %): %', SQLSTATE, SQLERRM;
  END \$\$;" 2>&1 | sed 's/^psql:[^ ]* NOTICE:  /NOTICE: /'
echo "--- ... and a transfer debits one account and credits another atomically (append_multi)"
PGOPTIONS="-c role=orders_app" psql_ -d $db -c "SELECT * FROM eventstore.append_multi('[
    {\"stream_id\": \"wallet-ada\", \"expected_version\": 0, \"events\": [{\"type\": \"Debited\", \"data\": {\"amount\": 25}, \"tags\": [\"transfer:t1\"]}]},
    {\"stream_id\": \"wallet-linus\", \"expected_version\": 0, \"events\": [{\"type\": \"Credited\", \"data\": {\"amount\": 25}, \"tags\": [\"transfer:t1\"]}]}]')" \
    | sed -E 's/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/<event id>/'

if [ "$keep" = 1 ] && [ "$own_cluster" = 1 ]; then
    echo "PostgreSQL keeps running: psql -h $host -p $port -U $user $db   (stop: pg_ctl -D $host/data stop)"
fi
