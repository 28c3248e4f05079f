#!/usr/bin/env bash
# run.sh LABEL BINARY SCENARIO-ARGS...   (private cluster on 5442; CPU per row: CPU_WINDOW="SKIP WINDOW", default 10 15)
set -u
label=$1; bin=$2; shift 2
ADMIN=postgres://postgres@127.0.0.1:5442/postgres
while pgrep -f "^/tmp/lt/loadtest-" >/dev/null; do sleep 1; done
psql "$ADMIN" -qAtc "SELECT pg_stat_statements_reset()" >/dev/null
out=/work/ab/$label
cd /tmp && "$bin" "$@" --admin-database-url $ADMIN --out $out.d > $out.log 2>&1 &
bash /work/main/loadtest/scripts/cpu-per-row.sh ${CPU_WINDOW:-10 15} $ADMIN > $out.cpu 2>&1
wait
psql "$ADMIN" -Atc "select calls, round(total_exec_time::numeric/nullif(calls,0),3) ms_per_call, round(total_exec_time) exec_ms, left(regexp_replace(query,'\s+',' ','g'),60) from pg_stat_statements order by total_exec_time desc limit 5" > $out.pgss
echo "== $label"; grep -E "^(http-|amqp-|pgbench|broker|RATIO)" $out.log | grep -v ":"; grep -E "rows|postgres|loadtest" $out.cpu | head -4; head -3 $out.pgss
