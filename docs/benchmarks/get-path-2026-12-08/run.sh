#!/usr/bin/env bash
# The wallet read's CPU (docs/BENCHMARKS.md, "A wallet read's instructions"). Binaries: "base" = ef79087,
# "new" = the commit that trims the read path; each `cargo build --release -p wallet-service`, copied to
# /work/cg/bin/{base,new}. The loadtest binary is any recent release build (it is only the client here).
set -euo pipefail
LT=${LT:-/work/main/target/release/loadtest}
SECRET=get-path-secret-0123456789abcdef0123456789
# 1. Instructions per request with callgrind (callgrind.sh: the service under valgrind, counted only in a 40 s
#    window of a closed-loop read run over 100 wallets, then of GET /health from health.py).
BIN=/work/cg/bin/base ./callgrind.sh base; BIN=/work/cg/bin/new ./callgrind.sh new
# 2. Reads per second against the same client's GET /health, the service as its own process, ABBA.
n=0
for b in base new new base base new new base; do
    n=$((n+1))
    psql -q -h 127.0.0.1 -U postgres -c 'DROP DATABASE IF EXISTS lt_get' -c 'CREATE DATABASE lt_get'
    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/lt_get JWT_SECRET=$SECRET
    PORT=3913 RUST_LOG=warn /work/cg/bin/$b serve & PID=$!
    until curl -sf http://127.0.0.1:3913/health >/dev/null; do sleep 0.5; done
    cpu0=$(awk '{print $14+$15}' /proc/$PID/stat)
    "$LT" http-reads --url http://127.0.0.1:3913 --service-pid $PID --wallets 10000 --setup sql \
        --duration 15s --warmup 3s --closed --concurrency 64 --quiet --out reads-$n-$b
    echo "run $n $b: service CPU $(( $(awk '{print $14+$15}' /proc/$PID/stat) - cpu0 )) ticks" | tee -a cpu.txt
    kill $PID; wait $PID || true
done
