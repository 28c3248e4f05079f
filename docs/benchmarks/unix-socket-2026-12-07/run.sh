#!/usr/bin/env bash
# The service's Postgres connections over TCP loopback or the Unix socket (docs/BENCHMARKS.md, "A Unix socket
# to Postgres"). Same binary, same server (the machine's Postgres 15 on 127.0.0.1:5432 and
# /var/run/postgresql); only the admin URL the harness derives the run's DATABASE_URL from differs.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
OUT=docs/benchmarks/unix-socket-2026-12-07
declare -A URL=(
    [tcp]='postgres://postgres@127.0.0.1:5432/postgres'
    [unix]='postgres://postgres@%2Fvar%2Frun%2Fpostgresql/postgres'
)
n=0
# Open loop 1,000 debits/s, with CPU per ledger row by process.
for via in tcp unix unix tcp tcp unix; do
    n=$((n+1))
    ./target/release/loadtest http-debits --spawn --admin-database-url "${URL[$via]}" --wallets 10000 \
        --setup sql --duration 30s --warmup 5s --rate 1000 --out "$OUT/open-$n-$via" > "$OUT/open-$n-$via.log" 2>&1 &
    loadtest/scripts/cpu-per-row.sh 8 15 "${URL[$via]}" > "$OUT/open-$n-$via.cpu"
    wait
done
# Closed loop, 64 clients.
for via in unix tcp tcp unix; do
    n=$((n+1))
    ./target/release/loadtest http-debits --spawn --admin-database-url "${URL[$via]}" --wallets 10000 \
        --setup sql --duration 20s --warmup 3s --closed --concurrency 64 --out "$OUT/closed-$n-$via" \
        > "$OUT/closed-$n-$via.log" 2>&1 &
    loadtest/scripts/cpu-per-row.sh 5 12 "${URL[$via]}" > "$OUT/closed-$n-$via.cpu"
    wait
done
find "$OUT" -name '*.html' -delete
