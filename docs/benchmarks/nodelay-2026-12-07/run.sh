#!/usr/bin/env bash
# TCP_NODELAY on the API listener (docs/BENCHMARKS.md, "Syscalls per request; TCP_NODELAY"). Binaries:
# "nagle" = 773b010 (warp's default: Nagle on), "nodelay" = the commit that sets TCP_NODELAY on the listener;
# each built with `cargo build --release -p wallet-service -p loadtest` and copied to /tmp/cpr/*-$b.
set -euo pipefail
SECRET=sys-secret-0123456789abcdef0123456789abcd
psql -h 127.0.0.1 -U postgres -c 'CREATE DATABASE lt_sys' || true
# 1. Pipelined HTTP/1.1 and concurrent HTTP/2 streams (the service as its own process).
for b in nagle nodelay nodelay nagle; do
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/lt_sys JWT_SECRET=$SECRET PORT=3913 RUST_LOG=warn \
        /tmp/cpr/wallet-service-$b &
    PID=$!; sleep 3
    echo -n "$b: "; python3 pipelined.py 10; echo -n "$b: "; python3 pipelined.py 2
    for i in 1 2 3; do
        s=$(date +%s.%N)
        curl -s --parallel --parallel-immediate --parallel-max 20 --http2-prior-knowledge \
            $(for j in $(seq 20); do echo -n "http://127.0.0.1:3913/health -o /dev/null "; done)
        echo "$b h2c 20 streams: $(echo "($(date +%s.%N)-$s)*1000" | bc) ms"
    done
    kill $PID; sleep 1
done
# 1b. The same 20 parallel requests over TLS (HTTP/2 negotiated by ALPN), a self-signed P-256 certificate.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /tmp/cpr/key.pem \
    -out /tmp/cpr/cert.pem -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost
for b in nagle nodelay nodelay nagle; do
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/lt_sys JWT_SECRET=$SECRET PORT=3913 RUST_LOG=warn \
        TLS_CERT_FILE=/tmp/cpr/cert.pem TLS_KEY_FILE=/tmp/cpr/key.pem /tmp/cpr/wallet-service-$b &
    PID=$!; sleep 3
    for i in 1 2 3; do
        curl -sk --parallel --parallel-immediate --parallel-max 20 \
            $(for j in $(seq 20); do echo -n "https://localhost:3913/health -o /dev/null "; done) \
            -w '%{http_version} %{time_total}\n' | sort | tail -1 | sed "s/^/$b https 20 parallel: version+slowest /"
    done
    kill $PID; sleep 1
done
# 2. Wallet reads, closed loop (one request at a time per connection), three ABBA sittings.
n=0
for b in nagle nodelay nodelay nagle nodelay nagle nagle nodelay nodelay nagle nagle nodelay; do
    n=$((n+1))
    /tmp/cpr/loadtest-$b http-reads --spawn --wallets 10000 --setup sql --duration 15s --warmup 3s --closed \
        --concurrency 64 --out reads-$n-$b
done
# 3. Segments per read.
for b in nagle nodelay nagle nodelay; do
    nstat -n >/dev/null
    /tmp/cpr/loadtest-$b http-reads --spawn --wallets 10000 --setup sql --duration 10s --warmup 2s --closed \
        --concurrency 64 --skip-floor --out /tmp/cpr/seg-$b
    echo "$b $(nstat -z TcpOutSegs | grep TcpOutSegs)"
done
# 4. Runs 13-24: three more nagle/nodelay pairs, then "off" (this change with set_nodelay(false), built the
#    same way and copied to /tmp/cpr/*-off) against nodelay.
n=12
for b in nagle nodelay nodelay nagle nodelay nagle off nodelay nodelay off off nodelay; do
    n=$((n+1))
    /tmp/cpr/loadtest-$b http-reads --spawn --wallets 10000 --setup sql --duration 15s --warmup 3s --closed \
        --concurrency 64 --out reads-$n-$b
done
# 5. The wire (capture.txt) and one request at a time (single-request-ab.txt), the service as its own process.
for b in nagle nodelay; do
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/lt_sys JWT_SECRET=$SECRET PORT=3913 RUST_LOG=warn \
        /tmp/cpr/wallet-service-$b &
    PID=$!; sleep 3
    JWT_SECRET=$SECRET DATABASE_URL=postgres://postgres@127.0.0.1:5432/lt_sys /tmp/cpr/loadtest-$b http-reads \
        --url http://127.0.0.1:3913 --service-pid $PID --wallets 1000 --setup sql --duration 12s --warmup 2s \
        --closed --concurrency 2 --skip-floor --out /tmp/cpr/td-$b &
    sleep 8; timeout 1 tcpdump -i lo -nn -tt 'tcp port 3913' -w /tmp/cpr/td-$b.pcap || true
    wait %2 2>/dev/null || sleep 7
    kill $PID; sleep 1
done
for b in nagle nodelay off nodelay nagle off; do
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/lt_sys JWT_SECRET=$SECRET PORT=3913 RUST_LOG=warn \
        /tmp/cpr/wallet-service-$b &
    PID=$!; sleep 3
    echo -n "$b: "; python3 pipelined.py 1 5000
    kill $PID; sleep 1
done
