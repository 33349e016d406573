#!/usr/bin/env bash
# Real concurrent clients on append conditions and append_multi (scripts/dcb_clients.py,
# docs/dcb.md): 16 deciders on overlapping and disjoint course boundaries, then 16 clients
# transferring between random pairs of accounts with append_multi, against a throwaway
# PostgreSQL with the installed extension, as an application role holding grant_writer alone.
# Exits non-zero when an invariant fails. Uses examples/python's pinned venv (installed when
# missing, as scripts/clients_test.sh does).
#
#   bash scripts/dcb_clients_test.sh            # 20 s per phase (DCB_SECONDS to change)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

[ -f "$("$PG_CONFIG" --sharedir)/extension/pg_eventstore.control" ] \
    || die "pg_eventstore is not installed in $("$PG_CONFIG" --sharedir) (scripts/demo.sh installs it)"

py_dir=$REPO_ROOT/examples/python
if ! "$py_dir/.venv/bin/python" -c 'import psycopg' 2>/dev/null; then
    say "installing the Python client's dependencies (examples/python/.venv)"
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        [ "$(id -u)" = 0 ] || die "python3 -m venv needs Debian's python3-venv (apt-get install python3-venv)"
        apt-get install -y -q python3-venv >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q python3-venv >/dev/null; }
    fi
    rm -rf "$py_dir/.venv"
    python3 -m venv "$py_dir/.venv"
    "$py_dir/.venv/bin/pip" install -q -r "$py_dir/requirements.txt"
fi

work=$(mktemp -d /tmp/pg_eventstore-dcb.XXXXXX)
chmod 755 "$work"
host=$work/cluster port=$(free_port)
finish() { stop_cluster "$host"; rm -rf "$work"; return 0; }
trap finish EXIT
trap 'exit 130' INT TERM

say "starting a throwaway PostgreSQL in $host (port $port)"
start_cluster "$host" "$port"
psql_() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$host" -p "$port" -U postgres "$@"; }
psql_ -d postgres -c "CREATE DATABASE dcb"
psql_ -d dcb -c "CREATE EXTENSION pg_eventstore" -c "CREATE ROLE dcb_app LOGIN" \
    -c "SELECT eventstore.grant_writer('dcb_app')" >/dev/null

say "DCB clients: ${DCB_SECONDS:-20} s of course decisions, then ${DCB_SECONDS:-20} s of transfers"
"$py_dir/.venv/bin/python" "$REPO_ROOT/scripts/dcb_clients.py" \
    "host=$host port=$port dbname=dcb user=dcb_app" --seconds "${DCB_SECONDS:-20}" --clients 16
