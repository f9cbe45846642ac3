\echo
\echo '== Mar 02 23:05  The hour 22:00-23:00 is billed; five minutes later little is left'
\echo '   Shows: the usage since 23:00 is held back from what is available.'
SET credits.clock = '2026-03-02 23:00:00+00';
SELECT credits.run_hourly_deductions() \g /dev/null
SET credits.clock = '2026-03-02 23:05:00+00';
SELECT credits.run_balance_checks() \g /dev/null
SELECT * FROM billing_page;

\echo
\echo '== Mar 02 23:05  A batch job calls the chat API 1,000 times (4.20): more than is left'
\echo '   Shows: the calls are recorded (they happened); the check at 23:06 cuts the project off:'
\echo '   its instances are terminated and its volume locked at once, and the platform is told.'
SELECT credits.record_usage_batch(array_fill(42::bigint, ARRAY[1000]), array_fill('api:chat'::text, ARRAY[1000]),
                                  array_fill('0.0042'::credits.credits, ARRAY[1000])) \g /dev/null
SET credits.clock = '2026-03-02 23:06:00+00';
SELECT credits.run_balance_checks() \g /dev/null
\! "$DEMO_DIR/demo/worker.sh" 2026-03-02T23:06:30Z
SELECT * FROM resources;
SELECT * FROM billing_page;
