#!/usr/bin/env bash
# The deduction's cost per resource-hour must not depend on how the resource-hours are shaped:
# how many hours were missed (a catch-up after an outage) or how big one project is.  Four
# shapes, each in a database of its own on one server, every resource running since the
# project's last deducted hour:
#
#   many, 1 hour       PROJECTS projects x RESOURCES resources, 1 hour to deduct (three runs,
#                      one hour each; the median)
#   many, HOURS hours  the same projects, HOURS hours missed: one run catches them all up
#   one, 1 hour        one project with PROJECTS x RESOURCES resources, 1 hour (three runs)
#   one, HOURS hours   that project, HOURS hours missed, one run
#
#   test/bench/catchup_bench.sh [PROJECTS] [RESOURCES] [HOURS]     (default 1000 10 168)
#   DEDUCT=run test/bench/catchup_bench.sh                         (the whole hourly run)
#
# Prints the microseconds per resource-hour of each shape and each one's ratio to the first
# (the baseline, measured in the same run).  Target: all within 1.3x of each other.  Then what
# an hourly run pays besides its resource-hours, which a 1-hour shape spreads over PROJECTS x
# RESOURCES resource-hours and a catch-up over HOURS times as many:
#   - its start and the wait for its commit to reach the disk: each 1-hour shape is run three
#     more times in one session with synchronous_commit off (measured only: the runs always
#     wait), and the faster of its last two runs is the run's own work;
#   - for the many projects, the two rows each deducted project must have rewritten (its
#     account's balance and the lot it draws on), timed as two plain UPDATEs of every account
#     and lot in a rolled-back transaction;
# and the spread that these alone put between each 1-hour shape and the cheapest one.  The
# data is loaded straight into the tables; each run's result is checked (every resource-hour
# completed once, balances debited).  The extension must be installed.
set -euo pipefail
projects=${1:-1000}
resources=${2:-10}
hours=${3:-168}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib/tmp_server.sh
. "$here/../lib/tmp_server.sh"

TMP_SERVER_CONF="max_wal_size = 8GB
checkpoint_timeout = 30min
work_mem = 64MB
maintenance_work_mem = 256MB" tmp_server_start catchup_bench

start="'2026-09-01 00:00+00'::timestamptz"

# load DB NPROJECTS NRESOURCES: accounts deducted up to the start, resources running since
load() {
  psql -c "CREATE DATABASE $1"
  psql -d "$1" <<SQL
SET client_min_messages = warning;
CREATE EXTENSION credits;
SET search_path = public, credits;
SET credits.clock = '2026-09-01 00:00+00';
$(funded_accounts_sql "$2" 100000000.00 '2026-09-01 00:00+00' "$start")
INSERT INTO credits.resources (project_id, resource_id, kind, state, rate_per_hour, state_since, accrued_until, created_at)
SELECT p, 'gpu-' || k, 'instance', 'running', ((p + k) % 20 + 1) * '0.13'::credits.credits,
       $start, $start, $start
  FROM generate_series(1, $2) AS p, generate_series(1, $3) AS k;
VACUUM ANALYZE;
CHECKPOINT;
SQL
}

# deduction_sql AFTER_HOURS: SQL printing "completed seconds" of one deduction at the hour
# boundary AFTER_HOURS after the start (+ 5 s).  DEDUCT=run times
# credits.run_hourly_deductions() whole (with the per-run work of the other features: lot
# expiry, spending checks); by default the deduction itself, credits._deduct_ended_hours, as
# the run calls it.
deduction_sql() {
  local call="credits._deduct_ended_hours(credits.hour_of(credits.now()), credits.now())"
  [ "${DEDUCT:-}" = run ] && call="credits.run_hourly_deductions()"
  cat <<SQL
SELECT set_config('credits.clock', ($start + $1 * interval '1 hour' + interval '5 seconds')::text, false) \\g /dev/null
SELECT clock_timestamp() AS t0 \\gset
SELECT $call;
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 3);
SQL
}

# deduct DB AFTER_HOURS -> "completed seconds": one deduction, in a new session as every run is
deduct() {
  deduction_sql "$2" | psql -d "$1" -At | paste -sd' '
}

# deduct_warm DB FIRST -> "completed seconds" three times: the deductions FIRST, FIRST + 1 and
# FIRST + 2 hours after the start, one after the other in one session, with synchronous_commit
# off: what a run costs without its start and its wait for the disk
deduct_warm() {
  { echo 'SET synchronous_commit = off;'
    for k in 0 1 2; do deduction_sql $(($2 + k)); done
  } | psql -d "$1" -At | paste -sd' ' | xargs -n2
}

# check DB NRESOURCES HOURS: every resource-hour completed once, every balance debited
check() {
  psql -d "$1" -At <<SQL
SELECT CASE WHEN (SELECT count(*) FROM credits.transactions WHERE type = 'usage' AND status = 'completed') = $2::bigint * $3
             AND (SELECT count(DISTINCT (project_id, resource_id, usage_hour)) FROM credits.transactions WHERE type = 'usage') = $2::bigint * $3
             AND (SELECT sum(balance::numeric) FROM credits.accounts)
                 = (SELECT count(*) * 100000000 FROM credits.accounts) - (SELECT sum(rate_per_hour::numeric) * $3 FROM credits.resources)
             AND NOT EXISTS (SELECT FROM credits.verify(1))
        THEN 'ok' ELSE 'WRONG' END;
SQL
}

# writes DB -> seconds: every account's balance and every active lot rewritten once, as plain
# UPDATEs (what every hourly run must write per project at the least), rolled back
writes() {
  local accounts="UPDATE credits.accounts SET balance = balance OPERATOR(credits.-) '0.01'"
  local lots="UPDATE credits.credit_lots SET remaining = remaining OPERATOR(credits.-) '0.01',
                                          used = used OPERATOR(credits.+) '0.01' WHERE active"
  # (planned once first, so that the session's first look at the tables is not counted: a
  # run's start is measured apart)
  psql -d "$1" -At <<SQL | tail -1
EXPLAIN $accounts \g /dev/null
EXPLAIN $lots \g /dev/null
BEGIN;
SELECT clock_timestamp() AS t0 \gset
$accounts;
$lots;
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 4);
ROLLBACK;
SQL
}

total=$((projects * resources))
declare -A secs per warm_per
writes_per=
measure() {  # measure LABEL DB NPROJECTS NRESOURCES HOURS
  local label=$1 db=$2 p=$3 r=$4 h=$5 n s runs=()
  load "$db" "$p" "$r"
  psql -d "$db" -c CHECKPOINT
  if [ "$h" = 1 ]; then
    for i in 1 2 3; do
      read -r n s <<<"$(deduct "$db" "$i")"
      [ "$n" = "$total" ] || { echo "$label: run $i completed $n, not $total"; exit 1; }
      runs+=("$s")
    done
    s=$(printf '%s\n' "${runs[@]}" | sort -n | sed -n 2p)
    echo "$label: runs ${runs[*]} s ($(check "$db" "$total" 3))"
    runs=()
    while read -r n w; do
      [ "$n" = "$total" ] || { echo "$label: a warm run completed $n, not $total"; exit 1; }
      runs+=("$w")
    done <<<"$(deduct_warm "$db" 4)"
    w=$(printf '%s\n' "${runs[1]}" "${runs[2]}" | sort -n | head -1)
    warm_per[$label]=$(echo "$w * 1000000 / $total" | bc -l)
    echo "$label: three more in one session, synchronous_commit off: ${runs[*]} s ($(check "$db" "$total" 6))"
    if [ "$p" -gt 1 ]; then
      w=$(for _ in 1 2 3; do writes "$db"; done | sort -n | head -1)
      writes_per=$(echo "$w * 1000000 / $total" | bc -l)
      echo "$label: the accounts' and lots' rewrites alone: $w s (best of 3)"
    fi
  else
    read -r n s <<<"$(deduct "$db" "$h")"
    [ "$n" = $((total * h)) ] || { echo "$label: completed $n, not $((total * h))"; exit 1; }
    echo "$label: $s s ($(check "$db" "$total" "$h"))"
  fi
  secs[$label]=$s
  per[$label]=$(echo "$s * 1000000 / ($total * $h)" | bc -l)
  psql -c "DROP DATABASE $db"
}

measure "many, 1 hour" many_1 "$projects" "$resources" 1
measure "many, $hours hours" many_h "$projects" "$resources" "$hours"
measure "one, 1 hour" one_1 1 "$total" 1
measure "one, $hours hours" one_h 1 "$total" "$hours"

base=${per["many, 1 hour"]}
printf '\n%s, %d cores; %d resource-hours an hour (%d projects x %d resources, or one project)\n' \
  "$(psql -At -c 'SHOW server_version')" "$(nproc)" "$total" "$projects" "$resources"
for label in "many, 1 hour" "many, $hours hours" "one, 1 hour" "one, $hours hours"; do
  printf '%-22s %8.3f us per resource-hour  (%.0f resource-hours/s)  %.2fx the first\n' \
    "$label:" "${per[$label]}" "$(echo "1000000 / ${per[$label]}" | bc -l)" "$(echo "${per[$label]} / $base" | bc -l)"
done
printf 'target: all within 1.3x of each other\n'
cheapest=$(printf '%s\n' "${per[@]}" | sort -g | head -1)
printf '\nwhat a 1-hour run pays besides its resource-hours, per resource-hour:\n'
for label in "many, 1 hour" "one, 1 hour"; do
  least=$(echo "${per[$label]} - ${warm_per[$label]}" | bc -l)
  printf '  %-14s its start and the wait for the disk: %.3f us (%.3f us a run in a warm session without the wait)\n' \
    "$label" "$least" "${warm_per[$label]}"
  if [ "$label" = "many, 1 hour" ]; then
    least=$(echo "$least + $writes_per" | bc -l)
    printf '  %-14s the accounts and lots rewritten (%d projects): %.3f us\n' "$label" "$projects" "$writes_per"
  fi
  printf '  so "%s" costs at least %.2fx the cheapest shape (%.3f us + the cheapest)\n' \
    "$label" "$(echo "($cheapest + $least) / $cheapest" | bc -l)" "$least"
done
