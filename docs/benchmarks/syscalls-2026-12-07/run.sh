#!/usr/bin/env bash
# Syscalls per request of the service (docs/BENCHMARKS.md, "Syscalls per request"): the service as its own
# process, a closed loop against it, and `strace -f -c` attached for 8 s in the middle of the run.
set -euo pipefail
SECRET=sys-secret-0123456789abcdef0123456789abcd
URL=postgres://postgres@127.0.0.1:5432/lt_sys
psql -h 127.0.0.1 -U postgres -c 'DROP DATABASE IF EXISTS lt_sys' -c 'CREATE DATABASE lt_sys'
DATABASE_URL=$URL JWT_SECRET=$SECRET MAX_INITIAL_BALANCE=1000000000 PORT=3913 RUST_LOG=warn \
    ./target/release/wallet-service &
PID=$!
sleep 4
for scenario in "http-reads --wallets 1000 --skip-floor" "http-debits --wallets 10000"; do
    name=${scenario%% *}
    JWT_SECRET=$SECRET DATABASE_URL=$URL ./target/release/loadtest $scenario --url http://127.0.0.1:3913 \
        --service-pid $PID --setup sql --duration 25s --warmup 3s --closed --concurrency 64 --out "/tmp/$name" &
    LT=$!
    sleep 12
    timeout 8 strace -f -c -p $PID -o "strace-${name#http-}.txt" || true
    wait $LT
done
kill $PID
