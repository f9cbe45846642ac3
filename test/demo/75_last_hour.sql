\echo
\echo '== Mar 03 00:00  The hour of the cut-off is billed: the balance lands on exactly 0.00'
\echo '   Shows: what the balance cannot cover is recorded as uncollected, never as a debt;'
\echo '   nothing new can start until the balance is positive again.'
SET credits.clock = '2026-03-03 00:00:00+00';
SELECT credits.run_hourly_deductions() \g /dev/null
SELECT date, description, amount, status, uncollected FROM history WHERE date LIKE 'Mar 02 23:%';
SELECT * FROM billing_page;
\echo '(The burn rate counts the API usage of the last hour that ended: the batch job''s 4.20.)'
SELECT pg_temp.attempt($$SELECT credits.start_instance(42, 'gpu-a100-3', '2.40')$$) AS result \gset
\echo 'Starting another instance now:' :result
