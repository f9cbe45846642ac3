#!/usr/bin/env bash
# statement() and usage_by_resource() of a project with a year of hourly usage: project 1 has
# RESOURCES (default 3) resources billed every hour of 2025 (8,760 hours), a deposit a month, a
# grant and a refund, among PROJECTS (default 100) neighbours billed every hour too, one
# resource each.  Each hour's rows are written together, project after project, as the hourly
# deduction writes them: a project's hours lie on as many pages as it has hours.  Measured with
# pgbench, 1 client, SECONDS (default 10) per query: the year's statement from the usage rows
# alone (no summaries yet); then, after credits.run_usage_summaries() has summed the whole
# days, a month's statement, the year's, a month's usage by resource per day; and as the
# baseline from the same server, a plain read of the same year's usage rows of the project
# (credits._usage_since: one scan of the usage index given every hour) and the same rows read
# one probe per hour (credits._completed_usage, as the history reads them).
#
#   test/bench/statement_bench.sh [RESOURCES] [PROJECTS] [SECONDS]
#
# Target: a year's statement within 20 ms.  The extension must be installed.  About 3 minutes.
set -euo pipefail
resources=${1:-3}
projects=${2:-100}
seconds=${3:-10}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib/tmp_server.sh
. "$here/../lib/tmp_server.sh"

tmp_server_start statement_bench
scripts=$(mktemp -d /tmp/credits-statement-bench.XXXXXX)
chmod 755 "$scripts"
trap 'tmp_server_stop; rm -rf "$scripts"' EXIT

echo "loading project 1: $resources resources x 8760 hours; $projects neighbours x 8760 hours ..."
psql <<SQL
SET client_min_messages = warning;
$(funded_accounts_sql "$((projects + 1))" 100000.00 '2025-01-01 00:00+00' "'2026-01-01 00:00+00'" "'2025-01-01 00:00+00'")
-- a deposit a month for project 1 (paid lots), a grant, and a completed refund
INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, completed_at)
SELECT 1, 'deposit', 'completed', '1000.00', m, 'Deposit', m
  FROM generate_series('2025-02-01 00:00+00'::timestamptz, '2025-12-01 00:00+00', interval '1 month') AS m;
INSERT INTO credits.credit_lots (transaction_id, project_id, kind, amount, remaining, created_at)
SELECT t.transaction_id, 1, 'paid', t.amount, t.amount, t.completed_at
  FROM credits.transactions t WHERE t.project_id = 1 AND t.type = 'deposit' AND t.created_at > '2025-01-01 00:00+00';
UPDATE credits.accounts SET balance = balance + '11000.00' WHERE project_id = 1;
SELECT credits.grant_credits(1, '50.00', description => 'Welcome');
SELECT credits.complete_refund(1, credits.refund_deposit(1, (SELECT min(transaction_id) FROM credits.transactions
                                                              WHERE project_id = 1 AND type = 'deposit'), '10.00'));
-- the usage: completed hours, taken from the balance (lots are not drawn here: statements
-- read transactions only)
INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, resource_id,
                                  usage_hour, accrued_units, completed_at)
SELECT p, 'usage', 'completed', '-0.25', h, 'Instance gpu-' || k, 'gpu-' || k, h,
       '0.25'::numeric * 3600000000000000, h + interval '1 hour'
  FROM generate_series('2025-01-01 00:00+00'::timestamptz, '2025-12-31 23:00+00', interval '1 hour') AS h,
       generate_series(1, $projects + 1) AS p, generate_series(1, $resources) AS k
 WHERE p = 1 OR k = 1
 ORDER BY h, p, k;
INSERT INTO credits.resources (project_id, resource_id, kind, state, rate_per_hour, state_since, created_at)
SELECT 1, 'gpu-' || k, 'instance', 'stopped', '0.25', '2025-01-01 00:00+00', '2025-01-01 00:00+00'
  FROM generate_series(1, $resources) AS k;
VACUUM ANALYZE;
SQL

cat > "$scripts/month.sql" <<'SQL'
SELECT * FROM credits.statement(1, '2025-06-01 00:00+00', '2025-07-01 00:00+00');
SQL
cat > "$scripts/year.sql" <<'SQL'
SELECT * FROM credits.statement(1, '2025-01-01 00:00+00', '2026-01-01 00:00+00');
SQL
cat > "$scripts/by_resource.sql" <<'SQL'
SELECT * FROM credits.usage_by_resource(1, '2025-06-01 00:00+00', '2025-07-01 00:00+00');
SQL
cat > "$scripts/rows.sql" <<'SQL'
SELECT count(*), sum(u.amount) FROM credits._usage_since(1, '2025-01-01 00:00+00') u;
SQL
cat > "$scripts/probes.sql" <<'SQL'
SELECT count(*), sum(t.amount) FROM credits._completed_usage t WHERE t.project_id = 1;
SQL
chmod 644 "$scripts"/*.sql

psql -c "SELECT * FROM credits.statement(1, '2025-01-01 00:00+00', '2026-01-01 00:00+00')"
# (the grant and the refund are dated now: the year's closing balance is the opening of the
# period after it, and the statement up to now closes at the balance)
psql -At <<'SQL'
SELECT 'identity: ' || (sum(amount) FILTER (WHERE line IN ('opening_balance', 'deposits', 'grants', 'usage', 'expired', 'refunded'))
                        = sum(amount) FILTER (WHERE line = 'closing_balance'))
       || ', the year closes where the rest opens: '
       || (sum(amount) FILTER (WHERE line = 'closing_balance')
           = (SELECT amount FROM credits.statement(1, '2026-01-01 00:00+00', now() + interval '1 day')
               WHERE line = 'opening_balance'))
       || ', the whole history closes at the balance: '
       || ((SELECT amount FROM credits.statement(1, '2025-01-01 00:00+00', now() + interval '1 day')
             WHERE line = 'closing_balance')
           = (SELECT balance FROM credits.accounts WHERE project_id = 1))
  FROM credits.statement(1, '2025-01-01 00:00+00', '2026-01-01 00:00+00');
SQL
latency() { as_pg "$PGBIN/pgbench" -n -M prepared -c 1 -T "$seconds" -f "$scripts/$1.sql" 2>/dev/null \
              | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p'; }
printf '\n%s, %d cores; project 1: %d resources x 8760 hours, among %d projects\n' \
  "$(psql -At -c 'SHOW server_version')" "$(nproc)" "$resources" "$((projects + 1))"
printf 'statement, the year, from the rows: %s ms\n' "$(latency year)"
before=$(psql -At -c "SELECT * FROM credits.statement(1, '2025-01-01 00:00+00', '2026-01-01 00:00+00')")
read -r summed secs <<<"$(psql -At <<'SQL' | paste -sd' '
SELECT clock_timestamp() AS t0 \gset
SELECT credits.run_usage_summaries(400);
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 2);
SQL
)"
[ "$before" = "$(psql -At -c "SELECT * FROM credits.statement(1, '2025-01-01 00:00+00', '2026-01-01 00:00+00')")" ] ||
  { echo "the year's statement changed when its days were summed"; exit 1; }
printf 'summing the whole days:             %s project-days in %s s (the statement unchanged)\n' "$summed" "$secs"
printf 'statement, one month:               %s ms\n' "$(latency month)"
printf 'statement, the year:                %s ms\n' "$(latency year)"
printf 'usage_by_resource, a month by day:  %s ms\n' "$(latency by_resource)"
printf 'baseline, the year of usage rows:   %s ms\n' "$(latency rows)"
printf '  the same rows, a probe per hour:  %s ms\n' "$(latency probes)"
printf 'target: the year within 20 ms\n'
