#!/usr/bin/env bash
# Every benchmark, each on a throwaway cluster of its own, figures and ratios printed.
# Not a test: nothing here passes or fails on speed. `--quick` for a short smoke run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
bash scripts/setup.sh
install_extension
for bench in bench/append.sh bench/replay.sh bench/worker.sh bench/wait_for.sh bench/catchup.sh; do
    if [ -x "$bench" ] || [ -f "$bench" ]; then
        say "benchmark: $bench"
        bash "$bench" "$@"
    fi
done
