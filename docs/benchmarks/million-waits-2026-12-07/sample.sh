#!/usr/bin/env bash
# Samples the wait events of the cluster's active backends every 50 ms: "epoch_ms wait_event_type:wait_event count ..."
while true; do
  t=$(date +%s%3N)
  r=$(psql -h 127.0.0.1 -p 5442 -U postgres -Atc "SELECT string_agg(w || '=' || n, ' ') FROM (SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') w, count(*) n FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() AND datname = 'lt_m2' GROUP BY 1) x" 2>/dev/null)
  echo "$t $r"
  sleep 0.05
done
