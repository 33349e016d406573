#!/usr/bin/env bash
# The order service clients (examples/python, examples/node) against a throwaway PostgreSQL
# with the extension and a real eventstore-worker beside it: the Python tests, then the Node
# tests. Exits non-zero when either fails. Installs the clients' pinned dependencies when missing.
#
#   bash scripts/clients_test.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

[ -f "$("$PG_CONFIG" --sharedir)/extension/pg_eventstore.control" ] \
    || die "pg_eventstore is not installed in $("$PG_CONFIG" --sharedir) (scripts/demo.sh installs it)"

# Python: a venv under the example, psycopg and pytest pinned.
py_dir=$REPO_ROOT/examples/python
if ! "$py_dir/.venv/bin/python" -c 'import psycopg, pytest' 2>/dev/null; then
    say "installing the Python client's dependencies (examples/python/.venv)"
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        [ "$(id -u)" = 0 ] || die "python3 -m venv needs Debian's python3-venv (apt-get install python3-venv)"
        apt-get install -y -q python3-venv >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q python3-venv >/dev/null; }
    fi
    rm -rf "$py_dir/.venv"
    python3 -m venv "$py_dir/.venv"
    "$py_dir/.venv/bin/pip" install -q -r "$py_dir/requirements.txt"
fi
# Node: exactly what package-lock.json says.
node_dir=$REPO_ROOT/examples/node
if [ ! -d "$node_dir/node_modules/pg" ]; then
    say "installing the Node client's dependencies (npm ci)"
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

worker_binary

work=$(mktemp -d /tmp/pg_eventstore-clients.XXXXXX)
chmod 755 "$work"
host=$work/cluster port=$(free_port)
worker_pid=""
finish() {
    [ -n "$worker_pid" ] && kill -TERM "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
    stop_cluster "$host"
    rm -rf "$work"
    return 0
}
trap finish EXIT
trap 'exit 130' INT TERM

say "starting a throwaway PostgreSQL in $host (port $port)"
start_cluster "$host" "$port"
db=orders
psql_() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$host" -p "$port" -U postgres "$@"; }
psql_ -d postgres -c "CREATE DATABASE $db"
psql_ -d $db -c "CREATE EXTENSION pg_eventstore"
# The command side holds grant_writer alone; the query side may read order_summary and wait for
# the worker, nothing more (README, Privileges; docs/worker.md, Read-your-writes).
psql_ -d $db -c "CREATE ROLE orders_app LOGIN" -c "CREATE ROLE orders_reader LOGIN" \
    -c "SELECT eventstore.grant_writer('orders_app')" >/dev/null

# The order example's worker configuration, pointed at this cluster; order_summary's setup also
# grants the query side its SELECT, so a rebuild's new table carries it too.
python3 - "$REPO_ROOT/examples/orders-worker.toml" "$work/worker.toml" "host=$host port=$port dbname=$db user=postgres" <<'PY'
import sys
src, dst, dsn = sys.argv[1:]
text = open(src).read()
old_dsn = 'dsn = "host=/var/run/postgresql dbname=app user=eventstore_worker"'
setup_end = "    updated_at    timestamptz NOT NULL\n)\"\"\""
assert text.count(old_dsn) == 1 and text.count(setup_end) == 1, "examples/orders-worker.toml changed shape"
text = text.replace(old_dsn, f'dsn = "{dsn}"')
text = text.replace(setup_end, setup_end[:-3] + ";\nGRANT SELECT ON order_summary TO orders_reader\"\"\"")
open(dst, "w").write(text)
PY

say "starting eventstore-worker"
RUST_LOG=${RUST_LOG:-info} "$WORKER_BIN" run --config "$work/worker.toml" >"$work/worker.log" 2>&1 &
worker_pid=$!
status=""
for _ in $(seq 1 300); do
    status=$(psql_ -d $db -At -c "SELECT status FROM eventstore_worker.projections WHERE name = 'order_summary'" 2>/dev/null || true)
    [ "$status" = running ] && break
    kill -0 "$worker_pid" 2>/dev/null || { cat "$work/worker.log"; die "the worker exited"; }
    sleep 0.1
done
[ "$status" = running ] || { tail -20 "$work/worker.log"; die "order_summary is not running (status: ${status:-none})"; }
psql_ -d $db -c "GRANT USAGE ON SCHEMA eventstore_worker TO orders_reader" \
    -c "GRANT SELECT (name, status, checkpoint_lsn) ON eventstore_worker.projections TO orders_reader"

export ORDERS_WRITER_DSN="postgresql://orders_app@127.0.0.1:$port/$db"
export ORDERS_READER_DSN="postgresql://orders_reader@127.0.0.1:$port/$db"
failed=0
say "Python client tests (pytest)"
(cd "$py_dir" && .venv/bin/python -m pytest -q -p no:cacheprovider test_orders.py) || failed=1
say "Node client tests (node --test)"
(cd "$node_dir" && node --test) || failed=1
if ! kill -0 "$worker_pid" 2>/dev/null; then tail -20 "$work/worker.log"; die "the worker died during the tests"; fi
[ "$failed" = 0 ] || { tail -20 "$work/worker.log"; die "client tests failed"; }
say "client tests passed"
