#!/usr/bin/env bash
set -u
export JWT_SECRET=million-secret-0123456789abcdef0123456789
DB=postgres://postgres@127.0.0.1:5442/lt_million
cd /work/m1
DATABASE_URL=$DB PORT=3914 RUST_LOG=warn /tmp/lt/wallet-service-new > service.log 2>&1 &
SVC=$!
sleep 5
/tmp/lt/loadtest-new http-debits --url http://127.0.0.1:3914 --service-pid $SVC --database-url $DB --wallets 1000000 \
    --setup sql --sequential --duration 1200s --closed --concurrency 64 --out /work/main/docs/benchmarks/million-settings-2026-12-07 > loadtest.log 2>&1
echo "loadtest rc=$?" >> loadtest.log
kill $SVC
