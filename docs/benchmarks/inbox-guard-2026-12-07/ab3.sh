#!/usr/bin/env bash
# Bookings closed loop, 256 outstanding, throughput: base fold fold base (CPU windows: 10 s after 6 s)
set -u
CL="amqp-bookings --spawn --wallets 10000 --setup sql --duration 20s --closed --concurrency 256 --skip-broker-baseline"
n=20
for b in base fold fold base; do
  n=$((n+1))
  CPU_WINDOW="6 10" bash "$(dirname "$0")/run.sh" cl-$b-$n /tmp/lt/loadtest-$b $CL
done
