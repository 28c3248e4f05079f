#!/usr/bin/env bash
# API conformance: the service's own /openapi.json passes openapi-spec-validator, and a bounded schemathesis run
# against the real binary finds nothing, with an admin token and with a user token.
#
#   bash scripts/api-conformance.sh          (scripts/test.sh runs it on a full run)
#
# What it does:
#   1. Python tools: a venv under target/api-conformance/venv-<python version> with the pinned versions below (pip install from
#      PyPI when missing or different; `python3 -m venv` needs python3-venv on Debian, installed when missing).
#   2. cargo build --bin wallet-service (debug, like the tests), then starts it on a free private port (PORT=0;
#      the port is read from its log) against a fresh database created from TEST_DATABASE_URL, with an
#      in-process event bus and cache.
#   3. Seeds through the API: a user, their wallet (1000.00 USD), a budget, a credit, a hold and a second wallet, so that
#      ids reach past 404s (passed to schemathesis as per-operation path and body overrides in a generated
#      config file, target/api-conformance/schemathesis.toml).
#   4. openapi-spec-validator on the served document; then schemathesis with the checks not_a_server_error,
#      status_code_conformance, content_type_conformance and response_schema_conformance (and
#      response_headers_conformance, unsupported_method, allow_header_conformance, ignored_auth), positive and
#      negative data, bounded by --max-examples, once as admin and once as the seeded user.
#   5. Stops the service and drops the database. Exits non-zero on the first failing step.
#
# Knobs (environment):
#   TEST_DATABASE_URL           Postgres admin URL [postgres://postgres@127.0.0.1:5432/postgres]
#   API_CONFORMANCE_EXAMPLES    schemathesis --max-examples per operation and phase [20]
#   API_CONFORMANCE_SEED        schemathesis --seed [20260101]; `random` for a new one each run
#   API_CONFORMANCE_KEEP=1      keep the database and the service's log for a look afterwards
#   API_CONFORMANCE_PYTHON      the interpreter for the tools' venv [the newest python3.x found, see pick_python]
#   API_CONFORMANCE_ARGS        more schemathesis arguments, split on blanks (e.g. "--include-path /budgets
#                               --report har" to look at one operation's requests)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$REPO_ROOT"

SCHEMATHESIS_VERSION=4.32.5
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0
EXAMPLES="${API_CONFORMANCE_EXAMPLES:-20}"
SEED="${API_CONFORMANCE_SEED:-20260101}"
ADMIN_DB_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
JWT_SECRET_FOR_RUN="conformance-secret-0123456789abcdef0123456789"
WORK="$REPO_ROOT/target/api-conformance"
START_WAIT_SECS=60

log() { printf '[api-conformance] %s\n' "$*" >&2; }
die() { printf '[api-conformance] ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$WORK"

# ---- 1. tools ------------------------------------------------------------------------------------------------
venv_ok() {
    [[ -x "$VENV/bin/python" ]] || return 1
    "$VENV/bin/python" - "$SCHEMATHESIS_VERSION" "$OPENAPI_SPEC_VALIDATOR_VERSION" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
sys.exit(0 if (version("schemathesis"), version("openapi-spec-validator")) == (sys.argv[1], sys.argv[2]) else 1)
PY
}
# The newest Python at hand: CPython 3.11 before 3.11.8 can fail inside hypothesis with "SystemError: AST
# constructor recursion depth mismatch" (a CPython bug in ast.parse), so 3.12+ is preferred where present.
pick_python() {
    local c root
    for c in python3.13 python3.12; do
        command -v "$c" >/dev/null 2>&1 && "$c" -c 'import ensurepip' >/dev/null 2>&1 && { command -v "$c"; return; }
    done
    root="$(pyenv root 2>/dev/null || true)"
    for c in "$root"/versions/3.13*/bin/python3 "$root"/versions/3.12*/bin/python3; do
        [[ -n "$root" && -x "$c" ]] && "$c" -c 'import ensurepip' >/dev/null 2>&1 && { printf '%s\n' "$c"; return; }
    done
    command -v python3
}
command -v python3 >/dev/null 2>&1 || die "python3 not found (Debian: apt-get install python3 python3-venv)"
PYTHON="${API_CONFORMANCE_PYTHON:-$(pick_python)}"
VENV="$WORK/venv-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if ! venv_ok; then
    if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1 && [[ $EUID -eq 0 ]]; then
            log "installing python3-venv with apt-get"
            DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv </dev/null
        else
            die "python3 cannot create a venv (Debian: apt-get install python3-venv)"
        fi
    fi
    log "creating $VENV (schemathesis $SCHEMATHESIS_VERSION, openapi-spec-validator $OPENAPI_SPEC_VALIDATOR_VERSION)"
    rm -rf "$VENV"
    log "using $PYTHON ($("$PYTHON" --version 2>&1))"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION" </dev/null
fi
# CPython 3.11's ast.parse can raise SystemError("AST constructor recursion depth mismatch") instead of
# SyntaxError for a fragment that is not valid code; hypothesis parses such fragments (to describe lambdas) and
# only expects SyntaxError, so the run stops with a runtime error (seen with 3.11.7). In a 3.11 venv, a
# sitecustomize turns that one SystemError into the SyntaxError it stands for. Newer Pythons are left alone.
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if "$VENV/bin/python" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
    cat >"$SITE/sitecustomize.py" <<'PY'
# Written by scripts/api-conformance.sh (see there): CPython 3.11 ast.parse SystemError -> SyntaxError.
import ast

_parse = ast.parse


def _parse_or_syntax_error(*args, **kwargs):
    try:
        return _parse(*args, **kwargs)
    except SystemError as e:
        if "recursion depth mismatch" not in str(e):
            raise
        raise SyntaxError(str(e)) from e


ast.parse = _parse_or_syntax_error
PY
fi
command -v curl >/dev/null 2>&1 || die "curl not found"

# ---- 2. the service --------------------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
log "cargo build --bin wallet-service"
cargo build --quiet --bin wallet-service
BIN="$REPO_ROOT/target/debug/wallet-service"

DB="wallet_conformance_$(date +%s)_$$"
DB_URL="${ADMIN_DB_URL%/*}/$DB"
[[ "$ADMIN_DB_URL" == *\?* ]] && DB_URL="${DB_URL}?${ADMIN_DB_URL#*\?}"
psql_admin() { psql -w -X -q -v ON_ERROR_STOP=1 "$ADMIN_DB_URL" "$@" </dev/null; }
command -v psql >/dev/null 2>&1 || die "psql not found (Debian: apt-get install postgresql-client)"
psql_admin -c "CREATE DATABASE $DB" >/dev/null

SERVICE_LOG="$WORK/service.log"
SERVICE_PID=""
cleanup() {
    local status=$?
    if [[ -n "$SERVICE_PID" ]]; then
        kill "$SERVICE_PID" 2>/dev/null || true
        wait "$SERVICE_PID" 2>/dev/null || true
    fi
    if [[ "${API_CONFORMANCE_KEEP:-0}" == 1 ]]; then
        log "kept database $DB and $SERVICE_LOG"
    else
        psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    exit "$status"
}
trap cleanup EXIT

# Emptied here, not by the background job's own redirection, which may run after the first read below.
: >"$SERVICE_LOG"
env -u AMQP_URL -u REDIS_URL -u DATABASE_READ_URL -u RATE_LIMIT_PER_SECOND \
    DATABASE_URL="$DB_URL" JWT_SECRET="$JWT_SECRET_FOR_RUN" PORT=0 LOG_FORMAT=json RUST_LOG=warn,wallet_service::app=info \
    "$BIN" >>"$SERVICE_LOG" 2>&1 &
SERVICE_PID=$!
PORT=""
for ((i = 0; i < START_WAIT_SECS * 4; i++)); do
    PORT="$(grep -o '"port":[0-9]*' "$SERVICE_LOG" 2>/dev/null | head -1 | cut -d: -f2 || true)"
    [[ -n "$PORT" ]] && break
    kill -0 "$SERVICE_PID" 2>/dev/null || { cat "$SERVICE_LOG" >&2; die "the service exited at start"; }
    sleep 0.25
done
[[ -n "$PORT" ]] || { cat "$SERVICE_LOG" >&2; die "the service did not log its port within ${START_WAIT_SECS}s"; }
BASE="http://127.0.0.1:$PORT"
ready() { [[ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/ready" || true)" == 200 ]]; }
for ((i = 0; i < START_WAIT_SECS * 4; i++)); do
    ready && break
    sleep 0.25
done
ready || { cat "$SERVICE_LOG" >&2; die "the service on $BASE is not ready after ${START_WAIT_SECS}s"; }
log "service up on $BASE (database $DB)"

# ---- 3. seed ---------------------------------------------------------------------------------------------------
token() { JWT_SECRET="$JWT_SECRET_FOR_RUN" "$BIN" dev-token --ttl 3600 "$@"; }
uuid() { python3 -c 'import uuid; print(uuid.uuid4())'; }
USER_ID="$(uuid)"
COMPANY_ID="$(uuid)"
ADMIN_TOKEN="$(token --role admin)"
USER_TOKEN="$(token --role user --sub "$USER_ID" --company "$COMPANY_ID")"
# call METHOD PATH JSON EXPECTED-STATUS: prints the body; fails unless the status is the expected one.
call() {
    local out status
    out="$(curl -s -w '\n%{http_code}' -X "$1" "$BASE$2" -H "Authorization: Bearer $ADMIN_TOKEN" \
        -H 'Content-Type: application/json' --data "$3")"
    status="${out##*$'\n'}"
    [[ "$status" == "$4" ]] || die "seeding: $1 $2 answered $status, not $4: ${out%$'\n'*}"
    printf '%s' "${out%$'\n'*}"
}
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
call PUT "/users/$USER_ID" "{\"email\":\"conformance@example.com\",\"company_id\":\"$COMPANY_ID\",\"role\":\"user\"}" 200 >/dev/null
WALLET_ID="$(call POST /wallets "{\"user_id\":\"$USER_ID\",\"initial_balance\":\"1000.00\",\"currency\":\"USD\"}" 201 | field wallet_id)"
MONTH_START="$(date -u +%Y-%m-01)"
BUDGET_ID="$(call POST /budgets "{\"wallet_id\":\"$WALLET_ID\",\"total_amount\":\"500.00\",\"period_type\":\"YEARLY\",\"start_date\":\"$MONTH_START\"}" 201 | field budget_id)"
call POST "/wallets/$WALLET_ID/transactions" '{"amount":"10.00","type":"CREDIT","reference_id":"seed-1"}' 201 >/dev/null
OTHER_USER_ID="$(uuid)"
call PUT "/users/$OTHER_USER_ID" "{\"email\":\"other@example.com\",\"company_id\":\"$COMPANY_ID\",\"role\":\"user\"}" 200 >/dev/null
OTHER_WALLET_ID="$(call POST /wallets "{\"user_id\":\"$OTHER_USER_ID\",\"initial_balance\":\"1000.00\",\"currency\":\"USD\"}" 201 | field wallet_id)"
call PUT "/budgets/$BUDGET_ID" '{"total_amount":"600.00","change_reason":"seed"}' 200 >/dev/null
HOLD_ID="$(call POST "/wallets/$WALLET_ID/holds" '{"amount":"5.00","reference_id":"seed-hold"}' 201 | field hold_id)"
log "seeded user $USER_ID, wallet $WALLET_ID, budget $BUDGET_ID, hold $HOLD_ID"

# ---- 4. validator and schemathesis -----------------------------------------------------------------------------
curl -fsS "$BASE/openapi.json" -o "$WORK/openapi.json"
log "openapi-spec-validator"
"$VENV/bin/openapi-spec-validator" "$WORK/openapi.json"

CONFIG="$WORK/schemathesis.toml"
cat >"$CONFIG" <<EOF
# Generated by scripts/api-conformance.sh: the seeded ids, so requests reach past 404s.
[[operations]]
include-path = "/wallets/{userId}"
parameters = { userId = "$USER_ID" }

[[operations]]
include-path-regex = "^/wallets/\\\\{walletId\\\\}/"
parameters = { walletId = "$WALLET_ID" }

[[operations]]
include-path = "/budgets/{id}"
include-method = "GET"
parameters = { id = "$USER_ID" }

[[operations]]
include-path = "/budgets/{id}"
include-method = "PUT"
parameters = { id = "$BUDGET_ID" }

[[operations]]
include-path = "/budgets/{budgetId}/history"
parameters = { budgetId = "$BUDGET_ID" }

[[operations]]
include-path = "/budgets"
parameters = { "body.wallet_id" = "$WALLET_ID" }

[[operations]]
include-path-regex = "^/holds/"
parameters = { holdId = "$HOLD_ID" }

[[operations]]
include-path = "/transfers"
parameters = { "body.from_wallet_id" = "$WALLET_ID", "body.to_wallet_id" = "$OTHER_WALLET_ID" }
EOF

if [[ "$SEED" == random ]]; then SEED_ARGS=(); else SEED_ARGS=(--seed "$SEED"); fi
# The four the contract's CI asks for, and four more that hold too: documented response headers (Retry-After,
# WWW-Authenticate), 405 with a correct Allow for every undocumented method, and no operation that ignores auth.
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
CHECKS+=,response_headers_conformance,unsupported_method,allow_header_conformance,ignored_auth
run_schemathesis() {
    local who="$1" tok="$2"
    log "schemathesis as $who (--max-examples $EXAMPLES, checks $CHECKS)"
    "$VENV/bin/schemathesis" --no-color --config-file "$CONFIG" run "$WORK/openapi.json" \
        --url "$BASE" \
        -H "Authorization: Bearer $tok" \
        --checks "$CHECKS" \
        --phases examples,coverage,fuzzing \
        --max-examples "$EXAMPLES" \
        "${SEED_ARGS[@]}" \
        --workers 2 \
        --request-timeout 10 \
        --suppress-health-check all \
        --report junit --report-junit-path "$WORK/junit-$who.xml" \
        ${API_CONFORMANCE_ARGS:-} </dev/null
}
started=$SECONDS
run_schemathesis admin "$ADMIN_TOKEN"
run_schemathesis user "$USER_TOKEN"
log "conformance clean in $((SECONDS - started))s (validator and schemathesis as admin and user)"
