\echo
\echo '== Mar 02 16:15  The owner saves a Mastercard as the default card (the bank will decline it)'
\echo '   Shows: a new card becomes the default, and auto-recharge charges the default card.'
SET credits.clock = '2026-03-02 16:15:00+00';
SELECT credits.add_payment_method(42, 'pm_decline_mc_0005', 'Mastercard •••• 0005') \g /dev/null

\echo
\echo '== Mar 02 21:20  Hours 16:00-21:00 are billed; less than 10.00 is left again'
\echo '   Shows: the declined recharge fails, and is not retried (nothing new at 21:21).'
SET credits.clock = '2026-03-02 21:20:00+00';
SELECT credits.run_hourly_deductions() \g /dev/null
SELECT credits.run_balance_checks() \g /dev/null
\! "$DEMO_DIR/demo/worker.sh" 2026-03-02T21:20:30Z
SET credits.clock = '2026-03-02 21:21:00+00';
SELECT credits.run_balance_checks() \g /dev/null
SELECT date, description, invoice, amount, status FROM history WHERE type <> 'usage';
SELECT * FROM billing_page;
