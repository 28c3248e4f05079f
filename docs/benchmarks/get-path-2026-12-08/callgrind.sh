#!/usr/bin/env bash
# Instructions per request, wallet GET and GET /health: the service under callgrind, counting only a window
# in the middle of a closed-loop run; requests in the window from the service's own request histogram.
set -euo pipefail
BIN=${BIN:-/work/main/target/release/wallet-service}
LT=${LT:-/work/main/target/release/loadtest}
TAG=${1:?tag}
DB=cg_$TAG
export JWT_SECRET=callgrind-secret-callgrind-secret-0123
psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
PORT=3913 METRICS_PORT=3914 RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file=$PWD/cg.$TAG.%p "$BIN" serve > svc.$TAG.log 2>&1 &
VG=$!
until curl -sf http://127.0.0.1:3913/health >/dev/null; do sleep 1; done
count() { curl -s http://127.0.0.1:3914/metrics | awk -v r="$1" '$0 ~ "^http_request_duration_seconds_count" && index($0, "route=\""r"\"") && index($0,"status=\"200\"") {s+=$2} END {print s+0}'; }
"$LT" http-reads --url http://127.0.0.1:3913 --database-url "$DATABASE_URL" --wallets ${WALLETS:-100} --setup sql \
  --duration 150s --warmup 30s --closed --concurrency 8 --client-threads 1 --no-books --skip-floor --quiet --out lt.$TAG > lt.$TAG.log 2>&1 &
LTP=$!
sleep 60
a=$(count '/wallets/{id}'); callgrind_control -i on $VG >/dev/null; sleep 40; callgrind_control -i off $VG >/dev/null; b=$(count '/wallets/{id}')
callgrind_control -d "reads" $VG >/dev/null
echo "reads window: $((b-a)) wallet GETs" | tee counts.$TAG.txt
wait $LTP || true
python3 "$(dirname "$0")/health.py" 8 200000 & HP=$!
sleep 20
a=$(count '/health'); callgrind_control -i on $VG >/dev/null; sleep 40; callgrind_control -i off $VG >/dev/null; b=$(count '/health')
callgrind_control -d "health" $VG >/dev/null
echo "health window: $((b-a)) GET /health" | tee -a counts.$TAG.txt
kill $HP || true
kill $VG; wait $VG || true
