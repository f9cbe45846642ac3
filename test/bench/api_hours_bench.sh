#!/usr/bin/env bash
# An hour of API usage, as the periodic runs see it: PROJECTS projects (default 20,000), each
# calling 2 API products every minute for MINUTES minutes (default 60).  Each minute the calls
# are recorded with record_usage_batch (1,000-element batches) and run_balance_checks() folds
# them into the hour's roll-up rows (credits.usage_rollup: an INSERT ... ON CONFLICT DO UPDATE
# of each project's two rows); at the end of the hour run_hourly_deductions() writes the
# hours' usage transactions from them, completed.  The baseline, from the same server: as many
# resource-hours of running instances (PROJECTS more projects, 2 instances each, no API
# usage), which the deduction also inserts completed.
#
#   test/bench/api_hours_bench.sh [PROJECTS] [MINUTES]
#
# Prints the balance checks' time per minute (median and slowest), the deduction of the API
# hours against the deduction of the instance hours, and what the folds did to
# credits.usage_rollup and credits.transactions (updates, of them heap-only, dead rows, size).  About 3 minutes.  The
# extension must be installed.
set -euo pipefail
projects=${1:-20000}
minutes=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib/tmp_server.sh
. "$here/../lib/tmp_server.sh"

# (autovacuum off: the dead rows counted are the folds' own)
TMP_SERVER_CONF="autovacuum = off" tmp_server_start api_hours_bench

echo "loading $projects API projects and $projects instance projects ..."
psql <<SQL
SET client_min_messages = warning;
$(funded_accounts_sql $((2 * projects)) 1000000.00 '2026-09-01 00:00+00')
SET credits.clock = '2026-09-01 02:00+00';
SELECT credits.start_instance(p, 'gpu-' || k, '1.30')
  FROM generate_series($projects + 1, 2 * $projects) AS p, generate_series(1, 2) AS k \\g /dev/null
VACUUM ANALYZE;
SQL

# Hour 01:00 of the API projects: each minute, every project calls both products.
fold_ms=()
for m in $(seq 0 $((minutes - 1))); do
  at=$(printf '2026-09-01 01:%02d:30+00' "$m")
  ms=$(psql -At <<SQL | tail -1
SET credits.clock = '$at';
SELECT credits.record_usage_batch(array_agg(p ORDER BY p, r), array_agg(r ORDER BY p, r),
                                  array_agg('0.0042'::credits.credits ORDER BY p, r))
  FROM (SELECT p, r, (row_number() OVER (ORDER BY p, r) - 1) / 1000 AS batch
          FROM generate_series(1, $projects) AS p, unnest(ARRAY['api:chat', 'api:embed']) AS r) AS calls
 GROUP BY batch \\g /dev/null
SET credits.clock = '$at';
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT credits.run_balance_checks() >= 0 AS checked \gset
SELECT round((extract(epoch FROM clock_timestamp()) - :t0) * 1000) AS ms;
SQL
)
  fold_ms+=("$ms")
done
stats=$(psql -At -c "SELECT relname, n_tup_upd, n_tup_hot_upd, n_dead_tup, pg_size_pretty(pg_table_size(relid))
                       FROM pg_stat_user_tables WHERE relid IN ('credits.usage_rollup'::regclass, 'credits.transactions'::regclass)
                      ORDER BY relname DESC")

# The deduction at 02:00 completes the API hours (booked); at 03:00 the instance hours (new).
deduct() {  # AT -> "seconds completed"
  psql -At <<SQL | tail -1
SET credits.clock = '$1';
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT credits.run_hourly_deductions() AS n \gset
SELECT round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 2) || ' ' || :n;
SQL
}
api=$(deduct '2026-09-01 02:00:30+00')
fresh=$(deduct '2026-09-01 03:00:30+00')
check=$(psql -At -c "SELECT count(*) FILTER (WHERE resource_id LIKE 'api:%'), count(*) FILTER (WHERE resource_id LIKE 'gpu-%'),
                            count(*) FILTER (WHERE status <> 'completed')
                       FROM credits.transactions WHERE type = 'usage'" \
                 -c "SELECT count(*) FROM credits.verify()")

sorted=$(printf '%s\n' "${fold_ms[@]}" | sort -n)
median=$(echo "$sorted" | sed -n "$(( (minutes + 1) / 2 ))p")
slowest=$(echo "$sorted" | tail -1)
read -r api_s api_n <<< "$api"
read -r fresh_s fresh_n <<< "$fresh"
printf '\n%s, %d cores, %d projects x 2 API products, %d minutes\n' \
  "$(psql -At -c 'SHOW server_version')" "$(nproc)" "$projects" "$minutes"
printf 'check: API hours %s, instance hours %s (expected %d each), not completed %s; verify() problems: %s\n' \
  "$(echo "$check" | sed -n 1p | cut -d'|' -f1)" "$(echo "$check" | sed -n 1p | cut -d'|' -f2)" $((2 * projects)) \
  "$(echo "$check" | sed -n 1p | cut -d'|' -f3)" "$(echo "$check" | sed -n 2p)"
printf 'run_balance_checks each minute (recording excluded): median %s ms, slowest %s ms\n' "$median" "$slowest"
echo "$stats" | while IFS='|' read -r rel upd hot dead size; do
  printf 'after the hour, %-13s updated %s times (%s heap-only), %s dead rows, table %s\n' "$rel:" "$upd" "$hot" "$dead" "$size"
done
printf 'run_hourly_deductions, API hours:        %s s for %s = %.0f hours/s\n' "$api_s" "$api_n" \
  "$(echo "$api_n / $api_s" | bc -l)"
printf 'run_hourly_deductions, instance hours:   %s s for %s = %.0f hours/s\n' "$fresh_s" "$fresh_n" \
  "$(echo "$fresh_n / $fresh_s" | bc -l)"
printf 'API / instance time per hour: %.2fx\n' "$(echo "($api_s / $api_n) / ($fresh_s / $fresh_n)" | bc -l)"
