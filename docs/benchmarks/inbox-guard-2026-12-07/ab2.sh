#!/usr/bin/env bash
# Bookings open loop 1,000/s with CPU windows (cpu-per-row.sh 10 15): base fold fold base fold base
set -u
OL="amqp-bookings --spawn --wallets 10000 --setup sql --duration 30s --warmup 5s --rate 1000 --skip-broker-baseline"
n=10
for b in base fold fold base fold base; do
  n=$((n+1))
  bash "$(dirname "$0")/run.sh" ol-$b-$n /tmp/lt/loadtest-$b $OL
done
