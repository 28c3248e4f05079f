#!/usr/bin/env bash
# What the consistent-hash routing buys: N wallet-service processes over one database and one RabbitMQ vhost
# of their own, behind a real HAProxy (Debian's haproxy) routing either by consistent hash on the wallet
# segment of the path (the Ingress's routing) or round robin; a loadtest run through HAProxy (`--url`); the
# version conflicts the processes counted (`wallet_version_conflicts_total` from each one's /metrics) before
# and after. Everything it starts it stops, and the database and vhost are dropped (also on failure).
#
#   scripts/scale-bench.sh hash|roundrobin SCENARIO [loadtest options...]
#   e.g. scripts/scale-bench.sh hash http-debits --wallets 100 --closed --concurrency 32 --duration 15s --warmup 3s
#        INSTANCES=1 scripts/scale-bench.sh hash amqp-bookings --wallets 3 --closed --concurrency 64 --duration 15s
#
# Environment: INSTANCES (3), READ_URL_SELF=1 (DATABASE_READ_URL = the primary itself: the read-your-writes
# bookkeeping runs, one WAL-position statement per group commit, to measure its cost), BIN (target/debug: wallet-service and loadtest built there), BASE_PORT (39100),
# TEST_DATABASE_URL / TEST_AMQP_URL / TEST_RABBITMQ_MGMT as scripts/test.sh sets them (local defaults).
# Only loopback addresses are used. Results: the loadtest's own summary, then one line `scale-bench: ...`.
set -euo pipefail

routing="${1:?hash or roundrobin}"
scenario="${2:?a loadtest scenario (http-debits, mixed, amqp-bookings, ...)}"
shift 2
instances="${INSTANCES:-3}"
bin="${BIN:-target/debug}"
base_port="${BASE_PORT:-39100}"
admin_db="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
amqp_base="${TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
mgmt="${TEST_RABBITMQ_MGMT:-http://guest:guest@127.0.0.1:15672}"
secret="scale-bench-secret-0123456789abcdef012345"
run="scalebench_$$"
work="$(mktemp -d)"
db_url="${admin_db%/*}/${run}"
amqp_url="${amqp_base%/*}/${run}"
pids=()

case "$routing" in
    hash) balance=$'balance uri path-only depth 2\n    hash-type consistent' ;;
    roundrobin) balance="balance roundrobin" ;;
    *) echo "routing: hash or roundrobin" >&2; exit 64 ;;
esac

cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    psql -X -q "$admin_db" -c "DROP DATABASE IF EXISTS ${run} WITH (FORCE)" >/dev/null 2>&1 || true
    curl -s -o /dev/null -X DELETE "${mgmt%/}/api/vhosts/${run}" || true
    rm -rf "$work"
}
trap cleanup EXIT

psql -X -q "$admin_db" -c "CREATE DATABASE ${run}" >/dev/null
curl -sf -o /dev/null -X PUT "${mgmt%/}/api/vhosts/${run}"
curl -sf -o /dev/null -X PUT -H 'content-type: application/json' \
    -d '{"configure":".*","write":".*","read":".*"}' "${mgmt%/}/api/permissions/${run}/guest"

ports=()
for ((i = 0; i < instances; i++)); do
    port=$((base_port + 1 + i))
    ports+=("$port")
    read_env=()
    [[ "${READ_URL_SELF:-0}" == 1 ]] && read_env=(DATABASE_READ_URL="$db_url")
    env -i PATH="$PATH" DATABASE_URL="$db_url" AMQP_URL="$amqp_url" JWT_SECRET="$secret" PORT="$port" \
        "${read_env[@]}" RUST_LOG=warn "$bin/wallet-service" serve >"$work/svc-$i.log" 2>&1 &
    pids+=("$!")
    # One at a time: the first migrates, the others find the schema in place.
    for _ in $(seq 1 120); do
        curl -sf -o /dev/null "http://127.0.0.1:${port}/ready" && break
        sleep 0.5
    done
    curl -sf -o /dev/null "http://127.0.0.1:${port}/ready" || { echo "instance $i not ready" >&2; cat "$work/svc-$i.log" >&2; exit 1; }
done

proxy_port="$base_port"
{
    printf 'global\n    maxconn 8192\ndefaults\n    mode http\n    timeout connect 1s\n    timeout client 60s\n'
    printf '    timeout server 60s\n    retries 2\n    option redispatch 1\n    retry-on conn-failure\n'
    printf 'frontend api\n    bind 127.0.0.1:%s\n    default_backend wallets\n' "$proxy_port"
    printf 'backend wallets\n    %s\n    option httpchk GET /ready\n    http-check expect status 200\n' "$balance"
    printf '    default-server inter 300ms fall 2 rise 2\n'
    for ((i = 0; i < instances; i++)); do printf '    server s%s 127.0.0.1:%s check\n' "$i" "${ports[$i]}"; done
} >"$work/haproxy.cfg"
haproxy -c -q -f "$work/haproxy.cfg"
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 40); do curl -sf -o /dev/null "http://127.0.0.1:${proxy_port}/ready" && break; sleep 0.25; done

conflicts() {
    local total=0 p v
    for p in "${ports[@]}"; do
        v=$(curl -sf "http://127.0.0.1:${p}/metrics" | awk '$1 == "wallet_version_conflicts_total" { print $2 }')
        total=$(awk -v a="$total" -v b="${v:-0}" 'BEGIN { print a + b }')
    done
    echo "$total"
}

before=$(conflicts)
started=$(date +%s.%N)
# The secret through the environment, so that result.json's command line does not carry it.
JWT_SECRET="$secret" TEST_AMQP_URL="$amqp_url" "$bin/loadtest" "$scenario" --url "http://127.0.0.1:${proxy_port}" \
    --database-url "$db_url" --quiet "$@" | tee "$work/loadtest.txt"
ended=$(date +%s.%N)
after=$(conflicts)
awk -v r="$routing" -v s="$scenario" -v n="$instances" -v b="$before" -v a="$after" -v t0="$started" -v t1="$ended" \
    -v ry="${READ_URL_SELF:-0}" \
    'BEGIN { d = a - b; t = t1 - t0; printf "scale-bench: routing=%s scenario=%s instances=%d read_url_self=%s conflicts=%d run_s=%.1f conflicts_per_s=%.1f\n", r, s, n, ry, d, t, d / t }'
