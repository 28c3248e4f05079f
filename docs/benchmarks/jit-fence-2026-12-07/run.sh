#!/usr/bin/env bash
# run.sh LABEL BINARY JIT(on|off) SCENARIO-ARGS...
set -u
label=$1; bin=$2; jit=$3; shift 3
ADMIN=postgres://postgres@127.0.0.1:5442/postgres
while pgrep -f "^/tmp/lt/loadtest-" >/dev/null; do sleep 1; done
psql "$ADMIN" -qc "ALTER SYSTEM SET jit = $jit" -c "SELECT pg_reload_conf()" >/dev/null
psql "$ADMIN" -qAtc "SELECT pg_stat_statements_reset()" >/dev/null
out=/work/ab/$label
cd /tmp && "$bin" "$@" --admin-database-url $ADMIN > $out.log 2>&1 &
bash /work/main/loadtest/scripts/cpu-per-row.sh 15 15 $ADMIN > $out.cpu 2>&1
wait
psql "$ADMIN" -Atc "select calls, round(total_exec_time::numeric/calls,3) ms_per_call, round(total_exec_time) exec_ms, jit_functions, left(regexp_replace(query,'\s+',' ','g'),90) from pg_stat_statements order by total_exec_time desc limit 8" > $out.pgss
echo "== $label ($jit)"; grep -E "ok/s|RATIO" $out.log | head -3; cat $out.cpu; head -4 $out.pgss
