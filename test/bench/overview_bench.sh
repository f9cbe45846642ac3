#!/usr/bin/env bash
# Reading one project's balance_overview row among PROJECTS projects (default 100,000), each
# with a deposit, two running instances and a volume, three deducted hours of usage, the
# current hour booked in part, and (every tenth project) API calls not yet folded.  pgbench
# picks a random project per query, 1 client for SECONDS seconds (default 20), then 2
# clients; prints the average latency, and one EXPLAIN ANALYZE for the server-side time.
#
#   test/bench/overview_bench.sh [PROJECTS] [SECONDS]
#
# Target: <= 1 ms per row.  The data is loaded straight into the tables.  About 2.5 minutes.
set -euo pipefail
projects=${1:-100000}
seconds=${2:-20}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib/tmp_server.sh
. "$here/../lib/tmp_server.sh"

tmp_server_start overview_bench
scripts=$(mktemp -d /tmp/credits-overview-bench.XXXXXX)
chmod 755 "$scripts"
trap 'tmp_server_stop; rm -rf "$scripts"' EXIT

echo "loading $projects projects ..."
t0=$(date +%s)
psql <<SQL
SET client_min_messages = warning;
$(funded_accounts_sql "$projects" 500.00 '2026-10-01 07:00+00')
-- two instances and a volume, running since 08:00 and booked up to 11:00
INSERT INTO credits.resources (project_id, resource_id, kind, state, rate_per_hour, state_since, accrued_until, created_at)
SELECT p, r.id, r.kind, r.state, r.rate, '2026-10-01 08:00+00', '2026-10-01 11:00+00', '2026-10-01 08:00+00'
  FROM generate_series(1, $projects) AS p,
       (VALUES ('gpu-1', 'instance', 'running', '2.40'::credits.credits), ('gpu-2', 'instance', 'running', '1.20'),
               ('vol-1', 'volume', 'available', '0.07')) AS r(id, kind, state, rate);
-- hours 8, 9 and 10 deducted (balance 500 - 3 x 3.67); hour 11 booked from a rate change at 11:20
INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, resource_id, usage_hour,
                                  accrued_units, completed_at)
SELECT r.project_id, 'usage', 'completed', -r.rate_per_hour, h, credits._describe(r.kind, r.resource_id),
       r.resource_id, h, r.rate_per_hour::numeric * 3600000000000000, h + interval '1 hour 5 seconds'
  FROM credits.resources r,
       generate_series(timestamptz '2026-10-01 08:00+00', '2026-10-01 10:00+00', interval '1 hour') AS h;
UPDATE credits.accounts SET balance = '488.99';
$(lots_follow_balances_sql)
INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, resource_id, usage_hour, accrued_units)
SELECT p, 'usage', 'accumulating', -credits._accrued_amount(u.units), '2026-10-01 11:00+00', 'Instance gpu-1', 'gpu-1',
       '2026-10-01 11:00+00', u.units
  FROM generate_series(1, $projects) AS p,
       LATERAL (SELECT credits._accrual('2.40', '2026-10-01 11:00+00', '2026-10-01 11:20+00') AS units) AS u;
UPDATE credits.resources SET accrued_until = '2026-10-01 11:20+00' WHERE resource_id = 'gpu-1';
-- API calls not folded yet, on every tenth project
INSERT INTO credits.usage_events
SELECT p, 'api:chat', '2026-10-01 11:00+00', '0.0042' FROM generate_series(10, $projects, 10) AS p, generate_series(1, 20);
VACUUM ANALYZE;
ALTER DATABASE overview_bench SET credits.clock = '2026-10-01 11:40+00';
SQL
echo "loaded in $(( $(date +%s) - t0 )) s"

cat > "$scripts/overview.sql" <<SQL
\\set p random(1, $projects)
SELECT * FROM credits.balance_overview WHERE project_id = :p;
SQL

# one project's row, as the dashboard shows it, and the server-side time of one read
psql <<'SQL'
\pset footer off
SELECT * FROM credits.balance_overview WHERE project_id = 4242;
SELECT * FROM credits.balance_overview WHERE project_id = 4240;
SQL
# (one session: the first query of a connection also fills its catalog caches)
psql -At <<'SQL' | grep -E '^(Planning|Execution) Time' | sed 's/^/one read, warm session: /'
SELECT count(*) FROM credits.balance_overview WHERE project_id IN (1, 2, 3) \g /dev/null
EXPLAIN (ANALYZE, COSTS OFF, SUMMARY ON) SELECT * FROM credits.balance_overview WHERE project_id = 4240;
EXPLAIN (ANALYZE, COSTS OFF, SUMMARY ON) SELECT * FROM credits.balance_overview WHERE project_id = 4230;
SQL

bench() {  # CLIENTS [PROTOCOL]
  as_pg "$PGBIN/pgbench" -n -M "${2:-prepared}" -T "$seconds" -c "$1" -j "$1" -f "$scripts/overview.sql" 2>&1 |
    awk '/^latency average/ {lat=$4} /^tps = / {tps=$3} END {if (lat == "") exit 1; printf "%s ms avg latency, %.0f reads/s\n", lat, tps}'
}
printf '\n%s, %d cores, %d projects, %s s per run\n' "$(psql -At -c 'SHOW server_version')" "$(nproc)" "$projects" "$seconds"
printf 'balance_overview of a random project, prepared, 1 client:  %s\n' "$(bench 1)"
printf 'balance_overview of a random project, prepared, 2 clients: %s\n' "$(bench 2)"
printf 'balance_overview of a random project, simple protocol (planned every time), 1 client: %s\n' "$(bench 1 simple)"
echo 'target: <= 1 ms'
