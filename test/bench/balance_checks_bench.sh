#!/usr/bin/env bash
# Benchmark of credits.run_balance_checks() on one throwaway server: PROJECTS projects
# (default 100,000), each with a completed deposit, a running instance and auto-recharge
# enabled (threshold 10.00, amount 50.00), of which 1% fall below the threshold during the
# hour.  A quarter of them have spending limits and alerts; the 1% that fall below the
# threshold are among them and cross their alert lines too (balance_low, runway_low), and half
# of those reach a daily budget that stops their instance.  The state is built through the API with credits.clock set: instances started during
# hour H-1 at staggered seconds, run_hourly_deductions() at H:00:30, then run_balance_checks()
# is timed at H:11, where it starts the 1% auto-recharges.  Each timed run is rolled back, so
# all runs do the same work; prints every run and the best of RUNS (default 3).  The baseline,
# timed in the same way in the same run, is the same check with the spending controls removed
# (in the rolled-back transaction): the ratio is what limits and alerts cost.  Each run is
# a fresh session, as pg_cron's are; next to the wall time it prints the CPU time of the
# server process (on a shared machine the wall time also counts waiting for a CPU).
#
#   test/bench/balance_checks_bench.sh [PROJECTS] [RUNS]
#
# Target: best run <= 1 s for 100,000 projects.  The extension must be installed (make install).
# Building 100,000 projects takes a few minutes.
set -euo pipefail
projects=${1:-100000}
runs=${2:-3}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib/tmp_server.sh
. "$here/../lib/tmp_server.sh"

tmp_server_start bench_checks

# Hour H is 2026-01-01 11:00 UTC.  Project p (1..projects):
#   p % 100 <> 0: deposit 100.00, instance at 1.00/h started at 10:00 + (p % 3559) s
#   p % 100 =  0: deposit 30.00, instance at 60.00/h started at 10:50 (10.00 deducted at
#                 11:00:30; at 11:11 11.00 has accrued: available 9.00 < threshold 10.00)
#   p % 4   =  0: alerts below 10.00 and below 2 hours of runway; limits: max_burn_rate
#                 100.00, min_runway 1 hour, monthly budget 5000.00, daily budget 500.00
#                 ('alert'), or 20.00 ('stop') when p % 200 = 100 (spent 21.00 at 11:11).
#                 A check at 11:05 (committed) has counted the deducted hour and announced
#                 runway_low for p % 100 = 0; at 11:11 they cross 10.00 (balance_low) and
#                 p % 200 = 100 reach their daily budget (budget_reached, instance stopped).
echo "building $projects projects through the API (two sessions) ..."
build() {  # build FIRST LAST
  PGOPTIONS="-c bench.first=$1 -c bench.last=$2" psql <<'SQL'
SET search_path = public, credits;
DO $$
DECLARE
    first bigint := current_setting('bench.first')::bigint;
    last bigint := current_setting('bench.last')::bigint;
    tx bigint;
    low boolean;
BEGIN
    FOR p IN first..last LOOP
        low := p % 100 = 0;
        PERFORM set_config('credits.clock', CASE WHEN low THEN '2026-01-01 10:50+00'
            ELSE ('2026-01-01 10:00+00'::timestamptz + (p % 3559) * interval '1 second')::text END, true);
        PERFORM credits.open_account(p);
        PERFORM credits.add_payment_method(p, 'pm_bench_' || p);
        tx := credits.add_credits(p, CASE WHEN low THEN '30.00' ELSE '100.00' END::credits);
        PERFORM credits.complete_deposit(p, tx, 'https://invoices.example/inv_' || tx);
        PERFORM credits.start_instance(p, 'gpu-' || p, CASE WHEN low THEN '60.00' ELSE '1.00' END::credits);
        PERFORM credits.configure_auto_recharge(p, true, '10.00', '50.00');
        IF p % 4 = 0 THEN
            PERFORM credits.configure_alerts(p, below_balance => '10.00', below_runway => '2 hours');
            PERFORM credits.configure_limits(p, max_burn_rate => '100.00', min_runway => '1 hour',
                daily_budget => CASE WHEN p % 200 = 100 THEN '20.00' ELSE '500.00' END::credits,
                monthly_budget => '5000.00',
                on_budget => CASE WHEN p % 200 = 100 THEN 'stop' ELSE 'alert' END);
        END IF;
        IF p % 5000 = 0 THEN
            COMMIT;
        END IF;
    END LOOP;
END $$;
SQL
}
half=$((projects / 2))
build 1 "$half" & pid1=$!
build "$((half + 1))" "$projects" & pid2=$!
wait "$pid1"; wait "$pid2"

psql <<'SQL'
SET search_path = public, credits;
SET credits.clock = '2026-01-01 11:00:30+00';
\timing on
SELECT credits.run_hourly_deductions() AS deducted_at_11_00_30;
\timing off
VACUUM ANALYZE;
-- (the checks of the minutes before: spending totals counted after the deduction, and the
-- runway_low of the projects running low announced at 11:05)
SET credits.clock = '2026-01-01 11:05+00';
SELECT credits.run_balance_checks() AS acted_at_11_05;
SQL

# One timed run: wall and server CPU milliseconds, projects acted on, auto-recharges pending,
# spending events queued.  PRE runs first in the same (rolled-back) transaction, untimed.
ticks=$(getconf CLK_TCK)
cpufile=$(mktemp)
chmod 666 "$cpufile"
timed_run() {  # timed_run PRE
  local out ms acted pending events cpu_ms
  out=$(CPUFILE=$cpufile PRE=$1 psql -At <<'SQL'
SET search_path = public, credits;
SET credits.clock = '2026-01-01 11:11+00';
SELECT pg_backend_pid() AS pid \gset
\setenv BPID :pid
BEGIN;
\getenv pre PRE
:pre
\! cut -d' ' -f14,15 /proc/$BPID/stat > $CPUFILE
SELECT clock_timestamp() AS t0 \gset
SELECT credits.run_balance_checks() AS acted \gset
SELECT round(extract(epoch FROM clock_timestamp() - :'t0') * 1000)::int AS ms \gset
\! cut -d' ' -f14,15 /proc/$BPID/stat >> $CPUFILE
SELECT count(*) AS pending FROM credits.transactions
 WHERE type = 'auto_recharge' AND status = 'pending' \gset
SELECT count(*) AS events FROM credits.events
 WHERE kind IN ('balance_low', 'runway_low', 'budget_reached', 'instance_stopped') \gset
ROLLBACK;
\echo :ms :acted :pending :events
SQL
)
  read -r ms acted pending events <<<"$out"
  cpu_ms=$(awk -v t="$ticks" 'NR == 1 { b = $1 + $2 } NR == 2 { a = $1 + $2 } END { printf "%d", (a - b) * 1000 / t }' "$cpufile")
  echo "$ms $cpu_ms $acted $pending $events"
}

echo "run_balance_checks() at 11:11 with $projects projects, $runs runs of each (rolled back):"
best= best_cpu= base= base_cpu=
for i in $(seq 1 "$runs"); do
  read -r ms cpu_ms acted pending events <<<"$(timed_run "SET LOCAL bench.pre = 'none';")"
  echo "  run $i, with limits and alerts: ${ms} ms (server CPU ${cpu_ms} ms), projects acted on: $acted, auto-recharges pending: $pending, spending events: $events"
  if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
  if [ -z "$best_cpu" ] || [ "$cpu_ms" -lt "$best_cpu" ]; then best_cpu=$cpu_ms; fi
  read -r ms cpu_ms acted pending events <<<"$(timed_run 'DELETE FROM credits.spending_controls;')"
  echo "  run $i, baseline without them: ${ms} ms (server CPU ${cpu_ms} ms), projects acted on: $acted, auto-recharges pending: $pending"
  if [ -z "$base" ] || [ "$ms" -lt "$base" ]; then base=$ms; fi
  if [ -z "$base_cpu" ] || [ "$cpu_ms" -lt "$base_cpu" ]; then base_cpu=$cpu_ms; fi
done
rm -f "$cpufile"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"

psql -At <<'SQL'
SET search_path = public, credits;
SELECT 'verify(): ' || CASE WHEN count(*) = 0 THEN 'clean' ELSE count(*) || ' problems' END FROM credits.verify();
SQL
echo "run_balance_checks, $projects projects (1% below threshold, a quarter with limits and alerts): best of $runs: $best ms (server CPU: best $best_cpu ms)"
echo "baseline without limits and alerts: best $base ms (server CPU $base_cpu ms); ratio $(awk -v a="$best" -v b="$base" 'BEGIN { printf "%.2f", a / b }') (CPU $(awk -v a="$best_cpu" -v b="$base_cpu" 'BEGIN { printf "%.2f", a / b }'))"
