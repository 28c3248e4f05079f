#!/usr/bin/env bash
# Instructions per debit: as callgrind.sh, for `POST /wallets/{id}/transactions` (closed loop, 8 clients,
# 1,000 wallets), the service's instructions in a 40 s window over the debits answered 201 in it.
set -euo pipefail
BIN=${BIN:-/work/main/target/release/wallet-service}
LT=${LT:-/work/main/target/release/loadtest}
TAG=${1:?tag}
DB=cgd_$TAG
export JWT_SECRET=callgrind-secret-callgrind-secret-0123
psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
PORT=3913 METRICS_PORT=3914 RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file=$PWD/cgd.$TAG.%p "$BIN" serve > svc-debits.$TAG.log 2>&1 &
VG=$!
until curl -sf http://127.0.0.1:3913/health >/dev/null; do sleep 1; done
count() { curl -s http://127.0.0.1:3914/metrics | awk -v r="$1" '$0 ~ "^http_request_duration_seconds_count" && index($0, "route=\""r"\"") && index($0,"status=\"201\"") {s+=$2} END {print s+0}'; }
"$LT" http-debits --url http://127.0.0.1:3913 --database-url "$DATABASE_URL" --wallets 1000 --setup sql \
  --duration 120s --warmup 20s --closed --concurrency 8 --client-threads 1 --quiet --out lt-debits.$TAG > lt-debits.$TAG.log 2>&1 &
LTP=$!
sleep 50
a=$(count '/wallets/{id}/transactions'); callgrind_control -i on $VG >/dev/null; sleep 40; callgrind_control -i off $VG >/dev/null; b=$(count '/wallets/{id}/transactions')
callgrind_control -d "debits" $VG >/dev/null
echo "debits window: $((b-a)) debits answered 201" | tee counts-debits.$TAG.txt
wait $LTP || true
kill $VG; wait $VG || true
