#!/usr/bin/env bash
# Everything the other scripts need, installed only where missing: Debian packages,
# cargo-pgrx (pinned to the pgrx version in Cargo.toml) and its PostgreSQL 15 registration.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# procps: kill(1), with which the integration tests signal the worker.
packages=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libclang-dev clang pkg-config sudo python3 procps)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"

if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION\$"; then
    say "installing cargo-pgrx $PGRX_VERSION (takes several minutes the first time)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

if ! grep -q "pg$PG_MAJOR" "${PGRX_HOME:-$HOME/.pgrx}/config.toml" 2>/dev/null; then
    say "registering PostgreSQL $PG_MAJOR with cargo-pgrx"
    cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG" >/dev/null
fi
