#!/usr/bin/env bash
# Every benchmark, each on a throwaway cluster of its own, then the report written from what
# they recorded. Not a test: nothing here passes or fails on speed.
#
#   bash scripts/bench.sh            # full run: BENCHMARKS.md and docs/bench/*.svg in the repository
#   bash scripts/bench.sh --quick    # smoke run of a few minutes: the report stays in the results directory
#   bash scripts/bench.sh --out DIR  # results directory (default bench/results/<UTC time>-<quick|full>/)
#
# The results directory holds results.tsv (every figure, recorded by the benchmarks through
# scripts/lib.sh `record`), one log per benchmark, and the report with its plots (for a full run,
# the same as the one in the repository).
# BENCH_SKIP_SETUP=1 skips scripts/setup.sh and the extension install (the installed extension
# is measured as it is); EVENTSTORE_WORKER_BIN names a worker binary to use instead of building one.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

QUICK=0 OUT=""
while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1 ;;
        --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT=$2; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
    shift
done
mode=$([ "$QUICK" = 1 ] && echo quick || echo full)

if [ "${BENCH_SKIP_SETUP:-0}" != 1 ]; then
    bash scripts/setup.sh
    install_extension
fi

dir=${OUT:-bench/results/$(date -u +%Y%m%d-%H%M%S)-$mode}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
export BENCH_RESULTS=$dir/results.tsv BENCH_QUICK=$QUICK
# A results file describes one run: a reused --out directory starts over.
: >"$BENCH_RESULTS"
trap 'exit 130' INT TERM

# --- machine facts -------------------------------------------------------------------------
load1() { cut -d' ' -f1 /proc/loadavg; }
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
# Figures from uncommitted changes cannot be traced back to a commit: say so.
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || commit+="-dirty"
record machine.mode "$mode"
record machine.date "$(date -u '+%Y-%m-%d %H:%M UTC')"
record machine.commit "$commit"
record machine.cores "$(nproc)"
record machine.cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
record machine.memory_gib "$(awk '/MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)" GiB
record machine.kernel "$(uname -sr)"
record machine.filesystem "$(df --output=fstype /tmp | tail -1 | tr -d ' ')"
record machine.load_start "$(load1)"
record machine.extension "$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$("$PG_CONFIG" --sharedir)/extension/pg_eventstore.control" 2>/dev/null || true)"

# The settings every benchmark cluster shares (scripts/lib.sh start_cluster), read once from a
# cluster started the same way; the benchmarks that change shared_buffers record their own.
say "reading PostgreSQL settings from a throwaway cluster"
(
    DIR=$(mktemp -d /tmp/pg_eventstore_settings.XXXXXX)
    trap 'stop_cluster "$DIR"; rm -rf "$DIR"' EXIT
    PORT=$(free_port)
    start_cluster "$DIR" "$PORT"
    for s in server_version fsync synchronous_commit full_page_writes wal_level wal_sync_method \
             shared_buffers max_wal_size checkpoint_timeout; do
        record "machine.pg.$s" "$("$PG_BIN/psql" -X -At -h "$DIR" -p "$PORT" -U postgres -d postgres -c "SHOW $s")"
    done
)

# --- the benchmarks, in order; one that fails is noted and the others still run --------------
failed=()
for name in append replay worker trigger wait_for catchup upcast dcb; do
    script=bench/$name.sh
    if [ ! -f "$script" ]; then
        say "no $script: skipped"
        continue
    fi
    say "benchmark: $script (log: $dir/$name.log)"
    record "bench.$name.load_start" "$(load1)"
    start=$SECONDS
    if ! bash "$script" 2>&1 | tee "$dir/$name.log"; then
        say "$script failed; see $dir/$name.log"
        record "bench.$name.failed" 1
        failed+=("$name")
    fi
    record "bench.$name.seconds" $((SECONDS - start)) s
done
record machine.load_end "$(load1)"

# --- the report ------------------------------------------------------------------------------
# Only a full run speaks for the repository; a quick run's figures are too short to publish.
# Each report links to plots beside it, so the results directory gets a report of its own.
python3 bench/report.py "$BENCH_RESULTS" --out "$dir/BENCHMARKS.md" --svg-dir "$dir"
if [ "$QUICK" = 1 ]; then
    say "report: $dir/BENCHMARKS.md (plots beside it)"
else
    python3 bench/report.py "$BENCH_RESULTS" --out BENCHMARKS.md --svg-dir docs/bench
    say "report: $REPO_ROOT/BENCHMARKS.md and docs/bench/*.svg (also in $dir)"
fi
if [ ${#failed[@]} -gt 0 ]; then
    die "failed: ${failed[*]} (logs in $dir)"
fi
