#!/usr/bin/env bash
# CPU per ledger row, by process, over a window of a running `loadtest --spawn` (docs/BENCHMARKS.md,
# "Outbox rows per commit"). Throughput on this shared 2-core machine moves ±25% from one phase to the
# next; CPU seconds per row written moves much less, so it is what an A/B of the work per posting reads.
#
#   loadtest/scripts/cpu-per-row.sh SKIP WINDOW [DATABASE_URL_OF_THE_SERVER]
#
# Finds the newest `wallet_loadtest_*` database (chosen once, when it has its ledger: waiting up to 10 s for
# the migrations, so neither a database that is being set up nor the previous run's, being dropped, is read),
# waits until its ledger starts to grow (the run's load has begun — warm-up included — after its setup, which
# with `--setup sql` writes no ledger rows: up to MAX_WAIT_FOR_LOAD_SECS), waits SKIP seconds more, then counts the rows of `transactions` and every
# process's CPU time (utime + stime from /proc, summed by command name) at the start and the end of WINDOW
# seconds, and prints CPU seconds and µs per row for each command that used more than 0.05 s. SKIP counts
# from the load's start, not the script's, so the window lands in the same part of a run however long its
# setup took on the machine of the day (start the script with the run).
# Processes that start or end inside the window are not counted (the service and Postgres backends of a
# run live through it).
set -euo pipefail
SKIP=${1:?seconds to wait}; WINDOW=${2:?seconds to measure}
ADMIN=${3:-postgres://postgres@127.0.0.1:5432/postgres}
HZ=$(getconf CLK_TCK)
MAX_WAIT_FOR_LOAD_SECS=120

snapshot() {
    for stat in /proc/[0-9]*/stat; do
        line=$(cat "$stat" 2>/dev/null) || continue
        name=${line#*(}; name=${name%%)*}
        rest=${line##*) }
        # Fields after the command: state is 1st, utime the 12th, stime the 13th.
        read -r -a f <<<"$rest"
        echo "${name// /_} $(( f[11] + f[12] ))"
    done | awk '{cpu[$1] += $2} END {for (k in cpu) print k, cpu[k]}' | sort
}

# The newest loadtest database, once it has its ledger.
database() {
    local db
    for _ in $(seq 50); do
        db=$(psql "$ADMIN" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'wallet_loadtest_%' ORDER BY oid DESC LIMIT 1")
        if [ -n "$db" ] && [ "$(psql "${ADMIN%/*}/$db" -Atc "SELECT to_regclass('transactions') IS NOT NULL" 2>/dev/null)" = t ]; then
            echo "$db"
            return
        fi
        sleep 0.2
    done
    echo "cpu-per-row: no loadtest database with a ledger under $ADMIN" >&2
    exit 1
}

rows() {
    psql "${ADMIN%/*}/$DB" -Atc "SELECT count(*) FROM transactions" 2>/dev/null && return
    echo "cpu-per-row: $DB went away inside the window (did the run end before it?)" >&2
    exit 1
}

# Polls until the ledger holds more rows than when first read: the load has started.
await_load() {
    local first now
    first=$(rows)
    for _ in $(seq $(( MAX_WAIT_FOR_LOAD_SECS * 5 ))); do
        now=$(rows)
        [ "$now" -gt "$first" ] && return
        sleep 0.2
    done
    echo "cpu-per-row: $DB's ledger did not grow within ${MAX_WAIT_FOR_LOAD_SECS} s" >&2
    exit 1
}

DB=$(database)
await_load
sleep "$SKIP"
r0=$(rows); s0=$(snapshot)
sleep "$WINDOW"
s1=$(snapshot); r1=$(rows)
n=$(( r1 - r0 ))
echo "rows: $n in ${WINDOW} s"
join <(echo "$s0") <(echo "$s1") | awk -v n="$n" -v hz="$HZ" \
    '{d = ($3 - $2) / hz; if (d > 0.05) printf "%-20s %7.2f cpu-s  %7.1f us/row\n", $1, d, (n > 0 ? d * 1e6 / n : 0)}'
