\echo
\echo '== Mar 02 11:00  The hourly deduction (pg_cron runs it on the hour) bills 10:00-11:00'
\echo '   Shows: each resource is charged once for the hour, for the time it ran, to the micro-credit.'
SET credits.clock = '2026-03-02 11:00:00+00';
SELECT credits.run_hourly_deductions() \g /dev/null
SELECT date, description, amount, status FROM history WHERE type = 'usage' AND status = 'completed';
SELECT * FROM billing_page;
