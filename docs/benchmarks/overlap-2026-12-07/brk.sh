#!/usr/bin/env bash
# brk.sh LABEL [env...]: amqp-bookings c256 15 s, then the broker baseline 20 s; beam CPU over 15 s of the baseline
label=$1; shift
out=/work/ab/$label
cd /tmp && env "$@" /tmp/lt/loadtest-multi amqp-bookings --spawn --wallets 1000 --setup sql --duration 20s --closed --concurrency 256 > $out.log 2>&1 &
until grep -q "^broker-baseline:" $out.log 2>/dev/null; do sleep 0.2; done
sleep 3
HZ=$(getconf CLK_TCK); pid=$(pgrep -f beam.smp | head -1)
c0=$(awk '{print $14+$15}' /proc/$pid/stat); lt0=$(awk '{print $14+$15}' /proc/$(pgrep -f "^/tmp/lt/loadtest-multi")/stat)
sleep 15
c1=$(awk '{print $14+$15}' /proc/$pid/stat); lt1=$(awk '{print $14+$15}' /proc/$(pgrep -f "^/tmp/lt/loadtest-multi")/stat)
wait
rate=$(grep "^broker-baseline closed" $out.log | awk '{print $6}')
echo "== $label rate=$rate beam_cpu_s=$(( (c1-c0) ))/$HZ loadtest_cpu_s=$(( (lt1-lt0) ))/$HZ"
python3 -c "r=$rate; print('beam us/msg %.0f  client us/msg %.0f' % (($c1-$c0)/$HZ/(r*15)*1e6, ($lt1-$lt0)/$HZ/(r*15)*1e6))"
grep -E "^broker-baseline closed" $out.log
