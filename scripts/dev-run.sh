#!/usr/bin/env bash
# Run the wallet service locally — works on a fresh Debian machine as root with nothing running.
#
#   bash scripts/dev-run.sh          run the service (Ctrl-C stops the service; the cluster keeps running)
#   bash scripts/dev-run.sh stop     stop the private PostgreSQL cluster
#
# What it does:
#   1. If DATABASE_URL is unset: makes sure the PostgreSQL server binaries are installed (apt-get install
#      postgresql if not), creates ONCE a private development cluster (data in <repo>/.build/pgdata/, which
#      is git-ignored; owned by the `postgres` OS user because the server refuses to run as root), starts it on
#      127.0.0.1:54329 if it is not already running, creates the database `wallet` if absent and exports
#      DATABASE_URL=postgres://postgres@127.0.0.1:54329/wallet.
#      If the `postgres` user cannot reach <repo> (e.g. a repo under /root, which is mode 700), the cluster is
#      kept in /var/tmp/wallet-dev-pg-<hash of repo path>/ instead (the script says so).
#      The Debian package may also create and start its own `main` cluster on 5432; it is not used.
#   2. If JWT_SECRET is unset: uses a development secret (with a warning).
#   3. cargo build --release (installs nodejs+npm with apt-get first if npm is missing: build.rs fetches the /docs
#      viewer from the npm registry), prints a dev token and ready-to-paste curl lines, then execs
#      target/release/wallet-service (serves HTTP on $PORT, default 3003).
# Running it again reuses the cluster and the database.
#
# Stop the private cluster with `bash scripts/dev-run.sh stop` (it keeps running after Ctrl-C so that the next
# start is instant). Delete <repo>/.build/pgdata (after stopping it) to start from scratch.
#
# Knobs (environment):
#   DATABASE_URL            use this database; skip the private cluster entirely
#   JWT_SECRET              HS256 key (default: a development secret)
#   PORT                    HTTP port (default 3003)
#   WALLET_DEV_PG_PORT      port of the private cluster (default 54329)
#   WALLET_DEV_SKIP_SERVE=1 stop once the database is ready and print DATABASE_URL (no build, no serve)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$REPO_ROOT"

export DEBIAN_FRONTEND=noninteractive
PG_PORT="${WALLET_DEV_PG_PORT:-54329}"
PG_DB=wallet
PG_START_TIMEOUT_SECS=60
DEV_JWT_SECRET='dev-secret-change-me-0123456789abcdef'

log()  { printf '[dev-run] %s\n' "$*" >&2; }
warn() { printf '[dev-run] WARNING: %s\n' "$*" >&2; }
die()  { printf '[dev-run] ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [[ $EUID -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
    else die "need root (or passwordless sudo) to run: $*"; fi
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these yourself: $*"
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" </dev/null
}

# Highest installed PostgreSQL version that has initdb+pg_ctl (Debian layout), or empty.
pg_latest_version() {
    local d v best=""
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]] || continue
        v="$(basename "$(dirname "$d")")"
        best="$(printf '%s\n%s\n' "$best" "$v" | sed '/^$/d' | sort -V | tail -1)"
    done
    printf '%s' "$best"
}

tcp_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" >/dev/null 2>&1; }

# The development cluster's folder: <repo>/.build/pgdata, or the /var/tmp fallback an earlier run chose.
dev_cluster_base() {
    local hash
    hash="$(printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-12)"
    if [[ ! -f "$REPO_ROOT/.build/pgdata/data/PG_VERSION" && -f "/var/tmp/wallet-dev-pg-$hash/data/PG_VERSION" ]]; then
        printf '%s' "/var/tmp/wallet-dev-pg-$hash"
    else
        printf '%s' "$REPO_ROOT/.build/pgdata"
    fi
}

# `dev-run.sh stop`: stops the private cluster if it runs.
stop_dev_cluster() {
    local data ver
    data="$(dev_cluster_base)/data"
    if [[ ! -f "$data/PG_VERSION" ]]; then
        log "no development cluster here ($data); nothing to stop"
        return 0
    fi
    ver="$(cat "$data/PG_VERSION")"
    local run_as=()
    [[ $EUID -ne 0 ]] || run_as=(runuser -u postgres --)
    if "${run_as[@]}" "/usr/lib/postgresql/$ver/bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        "${run_as[@]}" "/usr/lib/postgresql/$ver/bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
        log "stopped the development cluster ($data)"
    else
        log "the development cluster is not running ($data)"
    fi
}

case "${1:-}" in
    "") ;;
    stop) stop_dev_cluster; exit 0 ;;
    *) die "usage: bash scripts/dev-run.sh [stop]" ;;
esac

# ---------------------------------------------------------------------------------------------------------------
# 1. Database
# ---------------------------------------------------------------------------------------------------------------
setup_dev_database() {
    # --- server binaries ---
    local ver
    ver="$(pg_latest_version)"
    if [[ -z "$ver" ]]; then
        log "PostgreSQL server binaries not found under /usr/lib/postgresql; installing the postgresql package"
        log "(on Debian this may also create and start a 'main' cluster on port 5432 — it is not used here)"
        apt_install postgresql
        ver="$(pg_latest_version)"
        [[ -n "$ver" ]] || die "PostgreSQL server binaries still not found under /usr/lib/postgresql/*/bin"
    fi

    # The server must not run as root: as root we run it as `postgres`; as any other user, as that user.
    local run_as=()
    if [[ $EUID -eq 0 ]]; then
        id -u postgres >/dev/null 2>&1 \
            || die "OS user 'postgres' does not exist (it comes with the postgresql package)"
        run_as=(runuser -u postgres --)
    fi

    # --- where the cluster lives ---
    local hash base alt
    hash="$(printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-12)"
    base="$REPO_ROOT/.build/pgdata"
    alt="/var/tmp/wallet-dev-pg-$hash"
    if [[ ! -f "$base/data/PG_VERSION" && -f "$alt/data/PG_VERSION" ]]; then
        base="$alt"   # an earlier run had to fall back to /var/tmp: keep using that cluster
        log "using the development cluster in $base (the postgres user cannot reach $REPO_ROOT)"
    elif [[ $EUID -eq 0 ]]; then
        mkdir -p "$base"
        chmod 755 "$REPO_ROOT/.build"
        chown postgres:postgres "$base"
        chmod 700 "$base"
        if ! runuser -u postgres -- test -w "$base" -a -x "$base"; then
            rmdir "$base" 2>/dev/null || true
            rmdir "$REPO_ROOT/.build" 2>/dev/null || true
            base="$alt"
            warn "the postgres user cannot reach $REPO_ROOT (a parent directory is not traversable, e.g. /root)."
            warn "keeping the development cluster in $base instead."
            mkdir -p "$base"
            chown postgres:postgres "$base"
            chmod 700 "$base"
        fi
    else
        mkdir -p "$base"
        chmod 700 "$base"
    fi

    local data="$base/data" logfile="$base/postgres.log" sockdir="$base/socket"
    # Unix socket paths are limited to ~107 bytes; use a short directory if the repo path is long.
    if ((${#sockdir} + 20 > 100)); then
        sockdir="/tmp/wallet-dev-pg-sock-$hash"
    fi
    "${run_as[@]}" mkdir -p "$sockdir"

    # --- binaries that match the cluster ---
    if [[ -f "$data/PG_VERSION" ]]; then
        local data_ver
        data_ver="$(cat "$data/PG_VERSION")"
        if [[ "$data_ver" != "$ver" ]]; then
            [[ -x "/usr/lib/postgresql/$data_ver/bin/pg_ctl" ]] \
                || die "the cluster in $data is PostgreSQL $data_ver but only $ver is installed; delete $data to recreate it"
            ver="$data_ver"
        fi
    fi
    local bin="/usr/lib/postgresql/$ver/bin"

    # --- initdb (once) ---
    if [[ ! -f "$data/PG_VERSION" ]]; then
        log "creating a private PostgreSQL $ver cluster in $data"
        "${run_as[@]}" "$bin/initdb" -D "$data" --auth=trust -U postgres -E UTF8 --locale=C >/dev/null \
            || die "initdb failed for $data"
    fi

    # --- start (if not running) ---
    if "${run_as[@]}" "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        log "private PostgreSQL cluster already running ($data)"
    else
        if tcp_open 127.0.0.1 "$PG_PORT"; then
            die "port $PG_PORT is in use by something else; stop it or set WALLET_DEV_PG_PORT"
        fi
        log "starting the private PostgreSQL cluster on 127.0.0.1:$PG_PORT (log: $logfile)"
        "${run_as[@]}" "$bin/pg_ctl" -D "$data" \
            -o "-p $PG_PORT -k '$sockdir' -c listen_addresses=127.0.0.1" \
            -l "$logfile" -t "$PG_START_TIMEOUT_SECS" start -w >/dev/null \
            || { tail -n 20 "$logfile" >&2 2>/dev/null || true; die "the private PostgreSQL cluster did not start (log: $logfile)"; }
    fi
    log "it keeps running after Ctrl-C; stop it with: bash scripts/dev-run.sh stop"

    # --- database ---
    local psql=("$bin/psql" -X -q -w -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)
    local have
    have="$("${psql[@]}" -tAc "select 1 from pg_database where datname = '$PG_DB'" </dev/null)" \
        || die "cannot connect to the private cluster on 127.0.0.1:$PG_PORT"
    if [[ "$have" != 1 ]]; then
        log "creating database $PG_DB"
        "${psql[@]}" -c "create database $PG_DB" </dev/null
    fi

    export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/$PG_DB"
    log "database ready: DATABASE_URL=$DATABASE_URL"
}

if [[ -z "${DATABASE_URL:-}" ]]; then
    cd /   # the postgres user may not be allowed into the current directory
    setup_dev_database
    cd "$REPO_ROOT"
else
    log "DATABASE_URL is set; using it (no private cluster)"
fi

if [[ "${WALLET_DEV_SKIP_SERVE:-0}" == 1 ]]; then
    log "WALLET_DEV_SKIP_SERVE=1: database is ready; not building or serving"
    printf 'DATABASE_URL=%s\n' "$DATABASE_URL"
    exit 0
fi

# ---------------------------------------------------------------------------------------------------------------
# 2. Secrets
# ---------------------------------------------------------------------------------------------------------------
if [[ -z "${JWT_SECRET:-}" ]]; then
    export JWT_SECRET="$DEV_JWT_SECRET"
    warn "JWT_SECRET is not set; using the DEVELOPMENT secret '$DEV_JWT_SECRET' — never use it in production"
fi

# ---------------------------------------------------------------------------------------------------------------
# 3. Build
# ---------------------------------------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        die "cargo not found on PATH or in ~/.cargo/bin. Install Rust (>= 1.95), e.g.:
    apt-get install -y curl ca-certificates build-essential
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    . \"\$HOME/.cargo/env\""
    fi
fi
if ! command -v cc >/dev/null 2>&1; then
    log "no C compiler found (needed to build native dependencies); installing build-essential"
    apt_install build-essential
fi
# build.rs installs the /docs viewer from the npm registry (npm ci in web/); the binary embeds it.
if ! command -v npm >/dev/null 2>&1; then
    log "npm not found (the build installs the /docs viewer with it); installing nodejs and npm"
    apt_install nodejs npm
fi

log "cargo build --release"
cargo build --release
BIN="$REPO_ROOT/target/release/wallet-service"
[[ -x "$BIN" ]] || die "build finished but $BIN is missing"

# ---------------------------------------------------------------------------------------------------------------
# 4. Print how to call it, then serve
# ---------------------------------------------------------------------------------------------------------------
PORT="${PORT:-3003}"
export PORT
URL="http://127.0.0.1:$PORT"
DEV_SUB=00000000-0000-4000-8000-000000000001
DEV_COMPANY=00000000-0000-4000-8000-00000000c0de

TOKEN=""
if out="$("$BIN" dev-token --role admin --sub "$DEV_SUB" --company "$DEV_COMPANY" </dev/null)"; then
    # The JWT is the last non-empty line (in case anything else is printed to stdout).
    TOKEN="$(printf '%s\n' "$out" | awk 'NF { last = $0 } END { print last }' | tr -d '[:space:]')"
fi
if [[ ! "$TOKEN" =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$ ]]; then
    warn "'wallet-service dev-token' failed; replace \$TOKEN below with a JWT signed with JWT_SECRET"
    TOKEN='<JWT>'
fi

cat >&2 <<EOF

================================================================================
 wallet-service starting on $URL   (Ctrl-C to stop; 'bash scripts/dev-run.sh stop' stops its Postgres)
 DATABASE_URL=$DATABASE_URL
 Admin dev token (sub=$DEV_SUB, company=$DEV_COMPANY):

TOKEN='$TOKEN'

 Try (in another shell):
curl -s $URL/health
curl -s -H "Authorization: Bearer $TOKEN" $URL/ready
 or, after pasting the TOKEN= line above:
curl -s -H "Authorization: Bearer \$TOKEN" $URL/ready
curl -s -X PUT -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
  -d '{"email":"dev@example.com","company_id":"$DEV_COMPANY","role":"user"}' \\
  $URL/users/00000000-0000-4000-8000-0000000000aa
curl -s -X POST -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
  -H "Idempotency-Key: \$(cat /proc/sys/kernel/random/uuid)" \\
  -d '{"user_id":"00000000-0000-4000-8000-0000000000aa","initial_balance":"100.00","currency":"USD"}' \\
  $URL/wallets
 More tokens: JWT_SECRET='$JWT_SECRET' $BIN dev-token --role user --sub <UUID> --company <UUID>
================================================================================

EOF

exec "$BIN"
