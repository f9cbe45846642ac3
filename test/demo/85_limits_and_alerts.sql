\echo
\echo '== Mar 03 08:45  Before starting again, the owner sets a daily budget of 10.00 that stops'
\echo '                 instances, and an alert for less than 12 hours of runway; two GPUs start'
\echo '   Shows: the limits and where the project stands against them (spent since midnight UTC).'
SET credits.clock = '2026-03-03 08:45:00+00';
-- What the billing page shows about the limits and alerts.
CREATE TEMP VIEW spending AS
SELECT round(daily_budget::numeric, 2) AS "daily budget",
       round(spent_today::numeric, 2) AS "spent today", on_budget AS "at the budget",
       CASE WHEN budget_reached THEN 'yes' ELSE 'no' END AS reached,
       below_runway AS "alert below", alert_state AS alert
  FROM credits.spending_overview WHERE project_id = 42;
SELECT credits.configure_limits(42, daily_budget => '10.00', on_budget => 'stop') \g /dev/null
SELECT credits.configure_alerts(42, below_runway => '12 hours') \g /dev/null
SELECT credits.start_instance(42, 'gpu-a100-3', '2.40') \g /dev/null
SELECT credits.start_instance(42, 'gpu-a100-4', '2.40') \g /dev/null
SELECT * FROM spending;
SELECT * FROM billing_page;

\echo
\echo '== Mar 03 09:05  The balance check: at 4.87 per hour, less than 12 hours are left'
\echo '   Shows: one runway_low event, passed on to the owner; later checks do not repeat it.'
SET credits.clock = '2026-03-03 09:00:00+00';
SELECT credits.run_hourly_deductions() \g /dev/null
SET credits.clock = '2026-03-03 09:05:00+00';
SELECT credits.run_balance_checks() \g /dev/null
SET credits.clock = '2026-03-03 09:06:00+00';
SELECT credits.run_balance_checks() \g /dev/null
\! "$DEMO_DIR/demo/worker.sh" 2026-03-03T09:06:30Z
SELECT * FROM spending;
SELECT * FROM billing_page;

\echo
\echo '== Mar 03 10:50  The day''s usage reaches the budget of 10.00'
\echo '   Shows: the balance check stops both instances (their time billed up to now) and tells the'
\echo '   platform; the volume keeps its data and its billing; a new start waits for tomorrow.'
SET credits.clock = '2026-03-03 10:00:00+00';
SELECT credits.run_hourly_deductions() \g /dev/null
SET credits.clock = '2026-03-03 10:50:00+00';
SELECT credits.run_balance_checks() \g /dev/null
\! "$DEMO_DIR/demo/worker.sh" 2026-03-03T10:50:30Z
SELECT * FROM resources;
SELECT * FROM spending;
SELECT pg_temp.attempt($$SELECT credits.start_instance(42, 'gpu-a100-3', '2.40')$$) AS restart \gset
\echo 'Starting gpu-a100-3 again:' :restart

\echo
\echo '== Mar 03 10:51  The next check: with only the volume burning, the runway is long again'
\echo '   Shows: one balance_recovered event.'
SET credits.clock = '2026-03-03 10:51:00+00';
SELECT credits.run_balance_checks() \g /dev/null
\! "$DEMO_DIR/demo/worker.sh" 2026-03-03T10:51:30Z
SELECT * FROM spending;
SELECT * FROM billing_page;
