#!/usr/bin/env bash
# Benchmark of credits.start_instance() with spending limits set, per call, against the same
# call for a project without them, on one throwaway server: PROJECTS projects (default 20,000),
# each funded with 1,000.00; the even ones have every limit and alert set (max_burn_rate,
# min_runway, daily and monthly budgets with on_budget 'stop', below_balance, below_runway),
# none of them reached.  Each round starts CALLS instances (default 2,000) alternately on a
# project with limits and one without, in one session, timing each call; the rounds are
# rolled back.  Prints the mean per call of each and their ratio, for ROUNDS rounds (default 3).
#
#   test/bench/start_limits_bench.sh [PROJECTS] [CALLS] [ROUNDS]
set -euo pipefail
projects=${1:-20000}
calls=${2:-2000}
rounds=${3:-3}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib/tmp_server.sh
. "$here/../lib/tmp_server.sh"

tmp_server_start bench_start

echo "building $projects projects ..."
psql <<SQL
SET search_path = public, credits;
SET credits.clock = '2026-01-01 10:00+00';
$(funded_accounts_sql "$projects" 1000.00 '2026-01-01 09:00+00')
SELECT count(*) AS projects_with_limits FROM (
    SELECT credits.configure_limits(p, max_burn_rate => '1000.00', min_runway => '1 hour',
                                    daily_budget => '100000.00', monthly_budget => '1000000.00',
                                    on_budget => 'stop'),
           credits.configure_alerts(p, below_balance => '1.00', below_runway => '30 minutes')
      FROM generate_series(2, $projects, 2) AS p) AS x;
VACUUM ANALYZE;
SQL

for r in $(seq 1 "$rounds"); do
  PGOPTIONS="-c bench.calls=$calls -c bench.projects=$projects" psql -At <<'SQL'
SET search_path = public, credits;
SET credits.clock = '2026-01-01 10:30+00';
BEGIN;
DO $$
DECLARE
    calls int := current_setting('bench.calls')::int;
    projects int := current_setting('bench.projects')::int;
    p bigint;
    t0 timestamptz;
    with_limits interval := '0';
    without interval := '0';
BEGIN
    FOR i IN 0 .. calls - 1 LOOP
        -- (alternately an even project, with limits, and the odd one before it, without)
        p := 2 + 2 * ((i / 2) % (projects / 2)) - (i % 2);
        t0 := clock_timestamp();
        PERFORM credits.start_instance(p, 'gpu-bench-' || i, '1.00');
        IF p % 2 = 0 THEN with_limits := with_limits + (clock_timestamp() - t0);
        ELSE without := without + (clock_timestamp() - t0); END IF;
    END LOOP;
    RAISE NOTICE 'start_instance per call: with limits % ms, without % ms, ratio %',
        round(extract(epoch FROM with_limits) * 1000 / (calls / 2), 3),
        round(extract(epoch FROM without) * 1000 / (calls / 2), 3),
        round(extract(epoch FROM with_limits) / extract(epoch FROM without), 2);
END $$;
ROLLBACK;
SQL
done 2>&1 | sed -n 's/^.*NOTICE:  /  /p'
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
