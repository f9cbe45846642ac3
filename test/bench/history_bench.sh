#!/usr/bin/env bash
# Reading one project's usage: transaction_history and verify(project_id) for a random project
# among PROJECTS (default 10,000), each with 10 resources and HISTORY hours (default 24) of
# deducted usage, in a database whose first usage hour is YEARS (default 3) years back (the
# first usage of project 1, whose deducted hours span those years).  The usage index is
# ordered by hour first, so that the hourly run only appends to it; one project's completed
# rows are found by one index probe per hour of its deducted hours (credits._completed_usage).
# Also measured: project 1's history (one probe per hour of its years), and every project's
# usage of one hour (a time range over all projects).  The baseline, from the same server:
# the same read from a copy of the usage rows indexed by project first, one range scan - what
# the hourly run would pay for on every run instead.
#
#   test/bench/history_bench.sh [PROJECTS] [HISTORY] [YEARS] [SECONDS]
#
# pgbench, 1 client, SECONDS (default 10) per query; prints the average latency of each.
# About 2 minutes.  The extension must be installed.
set -euo pipefail
projects=${1:-10000}
history=${2:-24}
years=${3:-3}
seconds=${4:-10}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib/tmp_server.sh
. "$here/../lib/tmp_server.sh"

tmp_server_start history_bench
scripts=$(mktemp -d /tmp/credits-history-bench.XXXXXX)
chmod 755 "$scripts"
trap 'tmp_server_stop; rm -rf "$scripts"' EXIT

echo "loading $projects projects x 10 resources x $history hours, first usage $years years back ..."
psql <<SQL
SET client_min_messages = warning;
$(funded_accounts_sql "$projects" 1000.00 '2026-09-01 00:00+00' \
    "'2026-09-01 00:00+00'::timestamptz + $history * interval '1 hour'" "'2026-09-01 00:00+00'")
INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, resource_id,
                                  usage_hour, accrued_units, completed_at)
SELECT p, 'usage', 'completed', '-0.13', h, 'Instance gpu-' || k, 'gpu-' || k, h,
       '0.13'::numeric * 3600000000000000, h + interval '1 hour'
  FROM generate_series(1, $projects) AS p, generate_series(1, 10) AS k,
       generate_series('2026-09-01 00:00+00'::timestamptz,
                       '2026-09-01 00:00+00'::timestamptz + ($history - 1) * interval '1 hour', interval '1 hour') AS h;
UPDATE credits.accounts SET balance = balance - '0.13'::credits.credits * (10 * $history);
-- the database's first usage hour, years back (project 1's, from before its history above)
INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, resource_id,
                                  usage_hour, accrued_units, completed_at)
VALUES (1, 'usage', 'completed', '-0.01', '2026-09-01 00:00+00'::timestamptz - interval '$years years',
        'API usage: api:old', 'api:old', '2026-09-01 00:00+00'::timestamptz - interval '$years years',
        '0.01'::numeric * 3600000000, '2026-09-01 01:00+00'::timestamptz - interval '$years years');
UPDATE credits.accounts SET balance = balance - '0.01'::credits.credits,
                            deducted_from = '2026-09-01 00:00+00'::timestamptz - interval '$years years'
 WHERE project_id = 1;
$(lots_follow_balances_sql)
-- the baseline: the usage rows again, indexed by project first
CREATE TABLE usage_by_project AS SELECT * FROM credits.transactions WHERE type = 'usage';
CREATE UNIQUE INDEX ON usage_by_project (project_id, usage_hour, resource_id);
GRANT SELECT ON usage_by_project TO PUBLIC;
VACUUM ANALYZE;
SQL
hours=$(psql -At -c "SELECT count(*) FROM generate_series((SELECT min(usage_hour) FROM credits.transactions WHERE type = 'usage'),
                                                      (SELECT max(usage_hour) FROM credits.transactions WHERE type = 'usage'), '1 hour')")
check=$(psql -At -c "SELECT count(*) FROM credits.transaction_history WHERE project_id = 42" \
                 -c "SELECT count(*) FROM credits.transaction_history WHERE project_id = 1" \
                 -c "SELECT count(*) FROM credits.verify(42)")

# one pgbench script per query, a random project each time
run() {  # NAME SQL [PROTOCOL] -> average latency in ms
  printf '\\set p random(2, %d)\n%s\n' "$projects" "$2" > "$scripts/$1.sql"
  chmod 644 "$scripts/$1.sql"
  as_pg "$PGBIN/pgbench" -n -M "${3:-prepared}" -c 1 -T "$seconds" -f "$scripts/$1.sql" 2>&1 |
    awk '/latency average/ {print $4}'
}
history_ms=$(run history "SET credits.clock = '2026-09-02 00:30+00';
SELECT count(*) FROM credits.transaction_history WHERE project_id = :p;")
history_simple_ms=$(run history_simple "SET credits.clock = '2026-09-02 00:30+00';
SELECT count(*) FROM credits.transaction_history WHERE project_id = :p;" simple)
usage_ms=$(run usage "SELECT count(*) FROM credits._completed_usage WHERE project_id = :p;")
verify_ms=$(run verify "SELECT count(*) FROM credits.verify(:p);")
old_ms=$(run old "SELECT count(*) FROM credits._completed_usage WHERE project_id = 1;")
hour_ms=$(run hour "SELECT count(*) FROM credits._completed_usage WHERE usage_hour = '2026-09-01 12:00+00';")
baseline_ms=$(run baseline "SELECT count(*) FROM usage_by_project WHERE project_id = :p;")

printf '\n%s, %d cores, %d projects x 10 resources x %d hours; usage hours in the database: %s (%d years)\n' \
  "$(psql -At -c 'SHOW server_version')" "$(nproc)" "$projects" "$history" "$hours" "$years"
printf 'check: project 42 has %s history rows (expected %d), project 1 %s (expected %d); verify(42) problems: %s\n' \
  "$(echo "$check" | sed -n 1p)" $((10 * history + 1)) "$(echo "$check" | sed -n 2p)" $((10 * history + 2)) \
  "$(echo "$check" | sed -n 3p)"
printf 'transaction_history, one project:            %s ms\n' "$history_ms"
printf 'the same, simple protocol (planned each time): %s ms\n' "$history_simple_ms"
printf '_completed_usage, one project:               %s ms (%d hours)\n' "$usage_ms" "$history"
printf 'verify(project_id):                          %s ms\n' "$verify_ms"
printf '_completed_usage, project 1 (%d years):       %s ms (%.2f us per hour probed)\n' "$years" "$old_ms" \
  "$(echo "$old_ms * 1000 / $hours" | bc -l)"
printf '_completed_usage, every project, one hour:   %s ms (%d rows)\n' "$hour_ms" $((10 * projects))
printf 'baseline, usage rows indexed by project:     %s ms (%.1fx faster than _completed_usage)\n' "$baseline_ms" \
  "$(echo "$usage_ms / $baseline_ms" | bc -l)"
