#!/usr/bin/env bash
# run_hourly_deductions over PROJECTS x 10 resources (default 100,000 x 10 = 1,000,000
# resource-hours per hour) in the steady state: each resource has run since 00:00 and
# HISTORY hours (default 24) are already deducted and stored, as after a day in production;
# then three hourly runs follow, each completing one ended hour of every resource (written
# completed, every balance debited).  A run's cost must not grow with the history: the
# usage index is ordered by hour, so each run appends at its right edge.
#
# Next to it, from the same server: a plpgsql loop charging a copy of the same data row by
# row (compute the hour's amount, INSERT the usage row, UPDATE the balance, advance the
# resource), as a naive implementation would - on the first tenth of the projects, to stay
# within a few minutes (its rate per resource-hour does not depend on the size).  And the
# floors: one INSERT of a row per resource-hour into a bare table, and into a table with the
# unique (hour, project, resource) index that makes each hour count once - the least any
# design storing a usage row per resource-hour pays; and with it, every account locked and
# rewritten with the lot it draws on first: the writes of a run that also keeps balances and
# lots, made as plain statements.
#
#   test/bench/deduction_bench.sh [PROJECTS] [HISTORY]
#   LOTS=3 test/bench/deduction_bench.sh     # every project holds three credit lots (its deposit
#                                            # and two grants, one expiring during the runs)
#   USAGE_INDEX=project test/bench/deduction_bench.sh    # the usage index ordered by project
#                                                      # first, as before 0.1.0's final schema,
#                                                      # to compare
#
# Target: >= 300,000 resource-hours/s (the median of the three runs).  The data is loaded
# straight into the tables (the API would take ~3 ms per start_instance); the result is
# checked (every hour once, every balance right, verify() of one project clean).  The
# extension must be installed.  About 5 minutes at the default size.
set -euo pipefail
projects=${1:-100000}
history=${2:-24}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib/tmp_server.sh
. "$here/../lib/tmp_server.sh"

TMP_SERVER_CONF="max_wal_size = 8GB
checkpoint_timeout = 30min
work_mem = 64MB
maintenance_work_mem = 256MB" tmp_server_start deduction_bench

echo "loading $projects projects x 10 running resources, with $history hours deducted ..."
t0=$(date +%s)
psql <<SQL
SET client_min_messages = warning;
SET credits.clock = '2026-09-01 00:00+00';
$(funded_accounts_sql "$projects" 1000.00 '2026-09-01 00:00+00' \
    "'2026-09-01 00:00+00'::timestamptz + $history * interval '1 hour'" "'2026-09-01 00:00+00'")
INSERT INTO credits.resources (project_id, resource_id, kind, state, rate_per_hour, state_since, accrued_until, created_at)
SELECT p, 'gpu-' || k, 'instance', 'running', ((p + k) % 20 + 1) * '0.13'::credits.credits,
       '2026-09-01 00:00+00', '2026-09-01 00:00+00', '2026-09-01 00:00+00'
  FROM generate_series(1, $projects) AS p, generate_series(1, 10) AS k;
-- the deducted history: every resource's whole hours, completed, and the balances debited
INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, resource_id,
                                  usage_hour, accrued_units, completed_at)
SELECT r.project_id, 'usage', 'completed', -r.rate_per_hour, h, 'Instance ' || r.resource_id, r.resource_id,
       h, r.rate_per_hour::numeric * 3600000000000000, h + interval '1 hour'
  FROM generate_series('2026-09-01 00:00+00'::timestamptz, '2026-09-01 00:00+00'::timestamptz + ($history - 1) * interval '1 hour',
                       interval '1 hour') AS h,
       credits.resources r;
UPDATE credits.accounts a SET balance = a.balance - (SELECT sum(r.rate_per_hour) FROM credits.resources r
                                                      WHERE r.project_id = a.project_id) * $history;
$(lots_follow_balances_sql)
SQL
if [ "${LOTS:-1}" = 3 ]; then
  # Two grants beside each deposit: 30.00 at priority 10 that expires half an hour into the
  # second run's hour (runs 1 and 2 draw on it; run 2, having deducted the last hour it pays
  # for, writes its expiry), and 40.00 for instances only at priority 20 that pays what the
  # first leaves.
  echo "every project holds three lots: its deposit and two grants, one expiring during the runs"
  psql <<SQL
INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, completed_at)
SELECT p, 'grant', 'completed', g.amount, '2026-09-01 00:00+00', g.description, '2026-09-01 00:00+00'
  FROM generate_series(1, $projects) AS p,
       (VALUES ('30.00'::credits.credits, 'Trial'), ('40.00'::credits.credits, 'GPU credit')) AS g(amount, description);
INSERT INTO credits.credit_lots (transaction_id, project_id, kind, amount, remaining, expires_at, priority, applies_to, created_at)
SELECT t.transaction_id, t.project_id, 'promotional', t.amount, t.amount,
       CASE t.description WHEN 'Trial' THEN '2026-09-01 00:30+00'::timestamptz + ($history + 1) * interval '1 hour' END,
       CASE t.description WHEN 'Trial' THEN 10 ELSE 20 END,
       CASE t.description WHEN 'Trial' THEN NULL ELSE ARRAY['instance'] END, t.completed_at
  FROM credits.transactions t WHERE t.type = 'grant';
UPDATE credits.accounts SET balance = balance + '70.00';
SQL
fi
if [ "${USAGE_INDEX:-hour}" = project ]; then
  echo "the usage index ordered by project first"
  psql -c 'DROP INDEX credits.transactions_one_usage_per_hour' \
       -c "CREATE UNIQUE INDEX transactions_one_usage_per_hour ON credits.transactions (project_id, usage_hour, resource_id) WHERE type = 'usage'"
fi
psql <<SQL
-- the copy for the row-by-row loop
CREATE SCHEMA naive;
CREATE TABLE naive.accounts (project_id bigint PRIMARY KEY, balance credits.credits NOT NULL CHECK (balance >= '0'));
INSERT INTO naive.accounts SELECT project_id, balance FROM credits.accounts;
CREATE TABLE naive.resources (project_id bigint, resource_id text, rate_per_hour credits.credits,
                              accrued_until timestamptz, PRIMARY KEY (project_id, resource_id));
INSERT INTO naive.resources SELECT r.project_id, r.resource_id, r.rate_per_hour, a.deducted_until
  FROM credits.resources r JOIN credits.accounts a USING (project_id);
CREATE TABLE naive.usage (project_id bigint, resource_id text, usage_hour timestamptz, amount credits.credits,
                          PRIMARY KEY (project_id, resource_id, usage_hour));
CREATE FUNCTION naive.charge(cur timestamptz, last_project bigint) RETURNS bigint LANGUAGE plpgsql AS \$\$
DECLARE
    r record;
    amt credits.credits;
    n bigint := 0;
BEGIN
    FOR r IN SELECT * FROM naive.resources WHERE accrued_until < cur AND project_id <= last_project
              ORDER BY project_id, resource_id FOR UPDATE LOOP
        amt := credits._accrued_amount(credits._accrual(r.rate_per_hour, r.accrued_until, cur));
        INSERT INTO naive.usage VALUES (r.project_id, r.resource_id, credits.hour_of(r.accrued_until), amt);
        UPDATE naive.accounts a SET balance = greatest(a.balance - amt, '0'::credits.credits)
         WHERE a.project_id = r.project_id;
        UPDATE naive.resources x SET accrued_until = cur
         WHERE x.project_id = r.project_id AND x.resource_id = r.resource_id;
        n := n + 1;
    END LOOP;
    RETURN n;
END \$\$;
VACUUM ANALYZE;
CHECKPOINT;
SQL
echo "loaded in $(( $(date +%s) - t0 )) s"

# SQL AT -> "result seconds", with credits.clock at AT
timed() {
  psql -At <<SQL | tail -2 | paste -sd' '
SET credits.clock = '$2';
SELECT clock_timestamp() AS t0 \gset
$1
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 2);
SQL
}
# the hour boundary + 5 s, i hours after the history
run_at() { psql -At -c "SELECT '2026-09-01 00:00:05+00'::timestamptz + ($history + $1) * interval '1 hour'"; }

runs=()
for i in 1 2 3; do
  psql -c CHECKPOINT
  read -r n s <<<"$(timed 'SELECT credits.run_hourly_deductions();' "$(run_at "$i")")"
  [ "$n" = $((projects * 10)) ] || { echo "run $i completed $n usage transactions, not $((projects * 10))"; exit 1; }
  runs+=("$s")
done
median_s=$(printf '%s\n' "${runs[@]}" | sort -n | sed -n 2p)
naive_until=$(psql -At -c "SELECT '2026-09-01 00:00+00'::timestamptz + ($history + 1) * interval '1 hour'")
read -r naive_n naive_s <<<"$(timed "SELECT naive.charge('$naive_until', $((projects / 10)));" "$(run_at 1)")"
# The floors: writing one row per resource-hour and nothing else, into a bare table and into a
# table with the one unique index that makes each (resource, hour) count once.  (Ordered by
# hour first, as credits orders it, an empty table costs what one with history does.)
psql -c 'CREATE TABLE naive.floor_bare (project_id bigint, resource_id text, usage_hour timestamptz, amount credits.credits)' \
     -c 'CREATE TABLE naive.floor_unique (LIKE naive.floor_bare)' \
     -c 'CREATE UNIQUE INDEX ON naive.floor_unique (usage_hour, project_id, resource_id)' -c CHECKPOINT
floor_sql="SELECT project_id, resource_id, '2026-09-01 10:00+00', rate_per_hour FROM credits.resources"
read -r _ bare_s <<<"$(timed "INSERT INTO naive.floor_bare $floor_sql; SELECT 0;" "$(run_at 1)")"
read -r _ uniq_s <<<"$(timed "INSERT INTO naive.floor_unique $floor_sql; SELECT 0;" "$(run_at 1)")"
# What a run must write besides its rows: every due account locked and its balance rewritten,
# and the lot each draws on first (draw-down order, chosen beforehand) rewritten; plain
# statements, planned first and timed in a transaction that is rolled back.  With the
# unique-index INSERT: a run's writes made as plain statements, without reading or computing
# anything.
lock_accounts="SELECT count(*) FROM (SELECT FROM credits.accounts ORDER BY project_id FOR NO KEY UPDATE) AS x"
debit_accounts="UPDATE credits.accounts SET balance = balance OPERATOR(credits.-) '0.01'"
draw_lots="UPDATE credits.credit_lots l SET remaining = l.remaining OPERATOR(credits.-) '0.01', used = l.used OPERATOR(credits.+) '0.01'
  FROM naive.first_lots f WHERE l.transaction_id = f.transaction_id"
writes_s=$(psql -At <<SQL | tail -1
CREATE TABLE naive.first_lots AS
SELECT DISTINCT ON (project_id) transaction_id FROM credits.credit_lots WHERE active
 ORDER BY project_id, priority, expires_at NULLS LAST, kind = 'paid', created_at, transaction_id;
ANALYZE naive.first_lots;
EXPLAIN $lock_accounts \g /dev/null
EXPLAIN $debit_accounts \g /dev/null
EXPLAIN $draw_lots \g /dev/null
BEGIN;
SELECT clock_timestamp() AS t0 \gset
$lock_accounts \g /dev/null
$debit_accounts;
$draw_lots;
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 2);
ROLLBACK;
SQL
)

# the results: every resource's hour once, at its rate; the balances; the copy agrees
hours=$((history + 3))
psql -At <<SQL
SELECT 'check: ' || format('usage rows %s (completed %s, distinct resource-hours %s, expected %s); balances %s (expected %s); naive balances %s; the projects both charged agree (two hours apart): %s; verify(42): %s',
    (SELECT count(*) FROM credits.transactions WHERE type = 'usage'),
    (SELECT count(*) FROM credits.transactions WHERE type = 'usage' AND status = 'completed'),
    (SELECT count(DISTINCT (project_id, resource_id, usage_hour)) FROM credits.transactions WHERE type = 'usage'),
    $projects::bigint * 10 * $hours,
    (SELECT sum(balance::numeric) FROM credits.accounts),
    (SELECT $projects * (1000 + CASE WHEN ${LOTS:-1} = 3 THEN 70 ELSE 0 END) - sum(rate_per_hour::numeric) * $hours
            - CASE WHEN ${LOTS:-1} = 3 THEN (SELECT coalesce(sum(-amount::numeric), 0) FROM credits.transactions WHERE type = 'expiry') ELSE 0 END
       FROM credits.resources),
    (SELECT sum(balance::numeric) FROM naive.accounts),
    (SELECT count(*) = 0 FROM credits.accounts a JOIN naive.accounts n USING (project_id)
      WHERE a.balance + (SELECT coalesce(sum(-t.amount), '0') FROM credits.transactions t
                          WHERE t.type = 'expiry' AND t.project_id = a.project_id) <> n.balance - (SELECT sum(r.rate_per_hour) FROM credits.resources r WHERE r.project_id = a.project_id) * 2
        AND n.project_id IN (SELECT project_id FROM naive.usage)),
    (SELECT CASE WHEN count(*) = 0 THEN 'clean' ELSE count(*) || ' problems' END FROM credits.verify(42)))
    || format('; lots: %s active, %s expired, %s expiry transactions',
              (SELECT count(*) FROM credits.credit_lots WHERE active), (SELECT count(*) FROM credits.credit_lots WHERE ended = 'expired'),
              (SELECT count(*) FROM credits.transactions WHERE type = 'expiry'));
SQL

rate() { echo "$projects * 10 / $1" | bc -l; }
printf '\n%s, %d cores, %d projects x 10 resources, %d hours of history\n' \
  "$(psql -At -c 'SHOW server_version')" "$(nproc)" "$projects" "$history"
printf 'run_hourly_deductions, three hourly runs: %s s = %.0f / %.0f / %.0f resource-hours/s; median %.0f\n' \
  "${runs[*]}" "$(rate "${runs[0]}")" "$(rate "${runs[1]}")" "$(rate "${runs[2]}")" "$(rate "$median_s")"
printf 'plpgsql row-by-row:    %s resource-hours in %s s = %.0f resource-hours/s\n' "$naive_n" "$naive_s" "$(echo "$naive_n / $naive_s" | bc -l)"
printf 'floor, bare INSERT of one row per resource-hour:                  %.0f rows/s\n' "$(rate "$bare_s")"
printf 'floor, the same INSERT with a unique (hour, project, resource) index: %.0f rows/s\n' "$(rate "$uniq_s")"
printf 'set-based / row-by-row: %.2fx per resource-hour; the median run takes %.2fx the time of the bare INSERT, %.2fx of the INSERT with the unique index\n' \
  "$(echo "($(rate "$median_s")) / ($naive_n / $naive_s)" | bc -l)" "$(echo "$median_s / $bare_s" | bc -l)" "$(echo "$median_s / $uniq_s" | bc -l)"
plain_s=$(echo "$uniq_s + $writes_s" | bc -l)
printf 'its writes as plain statements: the unique-index INSERT of its rows (%s s) and every account locked and rewritten with the lot it draws on first (%s s): %.2f s = %.0f resource-hours/s; the median run takes %.2fx that\n' \
  "$uniq_s" "$writes_s" "$plain_s" "$(rate "$plain_s")" "$(echo "$median_s / $plain_s" | bc -l)"
printf 'target >= 300000 resource-hours/s\n'
