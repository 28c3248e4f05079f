#!/usr/bin/env bash
# The table, one sitting, on the private cluster with the README's settings.
set -u
ADMIN=postgres://postgres@127.0.0.1:5442/postgres
B=/tmp/lt/loadtest-fold
OUT=/work/main/docs/benchmarks/table-2026-12-07-inbox-guard
mkdir -p $OUT
cd /tmp
run() { name=$1; shift; echo "== $name $(date -u +%H:%M:%S)"; $B "$@" --admin-database-url $ADMIN --out $OUT/$name 2>&1 | grep -vE "^\s+\[" ; }
run compare-c64  compare --spawn --wallets 10000 --setup sql --duration 15s --warmup 3s --concurrency 64 --pgbench-clients 16
run compare-c128 compare --spawn --wallets 10000 --setup sql --duration 15s --warmup 3s --concurrency 128 --pgbench-clients 16
run open-1000    http-debits --spawn --wallets 10000 --setup sql --duration 30s --warmup 5s --rate 1000
run bookings-c256 amqp-bookings --spawn --wallets 10000 --setup sql --duration 15s --closed --concurrency 256
run bookings-1000 amqp-bookings --spawn --wallets 10000 --setup sql --duration 30s --warmup 5s --rate 1000
run reads-c64    http-reads --spawn --wallets 10000 --setup sql --duration 15s --warmup 3s --closed --concurrency 64
echo "== done $(date -u +%H:%M:%S)"
