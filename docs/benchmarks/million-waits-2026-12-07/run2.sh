#!/usr/bin/env bash
set -u
export JWT_SECRET=million-secret-0123456789abcdef0123456789
DB=postgres://postgres@127.0.0.1:5442/lt_m2
cd /work/m1
DATABASE_URL=$DB PORT=3914 RUST_LOG=warn /tmp/lt/wallet-service-new > service2.log 2>&1 &
SVC=$!
sleep 5
/tmp/lt/loadtest-new http-debits --url http://127.0.0.1:3914 --service-pid $SVC --database-url $DB --wallets 1000000 \
    --setup sql --sequential --duration 300s --closed --concurrency 64 --out /work/m1/m2 > loadtest2.log 2>&1
echo "loadtest rc=$?" >> loadtest2.log
kill $SVC
