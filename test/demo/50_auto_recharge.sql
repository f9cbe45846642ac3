\echo
\echo '== Mar 02 16:10  Hours 11:00-16:00 are billed; less than 10.00 is left'
\echo '   Shows: one auto-recharge of 25.00 is charged to the default card, and the balance rises.'
SET credits.clock = '2026-03-02 16:10:00+00';
SELECT credits.run_hourly_deductions() \g /dev/null
SELECT credits.run_balance_checks() \g /dev/null
\! "$DEMO_DIR/demo/worker.sh" 2026-03-02T16:10:30Z
SELECT date, description, invoice, amount, status FROM history WHERE type <> 'usage';
SELECT * FROM billing_page;
