#!/usr/bin/env bash
# Bookings open loop 1,000/s, ABBA ABBA: base (f53645c) vs fold (inbox guard in the commit)
set -u
n=0
OL="amqp-bookings --spawn --wallets 10000 --setup sql --duration 30s --warmup 5s --rate 1000 --skip-broker-baseline"
for pair in "base fold" "fold base" "base fold" "fold base"; do
  for b in $pair; do
    n=$((n+1))
    CPU_WINDOW="15 15" bash "$(dirname "$0")/run.sh" ol-$b-$n /tmp/lt/loadtest-$b $OL
  done
done
