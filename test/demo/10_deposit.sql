\echo
\echo '== Mar 02 09:55  The owner of project 42 saves a Visa card and buys 40.00 credits'
\echo '   Shows: a deposit is pending until the payment worker has charged the card.'
SET credits.clock = '2026-03-02 09:55:00+00';
SELECT credits.open_account(42) \g /dev/null
SELECT credits.add_payment_method(42, 'pm_visa_4242', 'Visa •••• 4242') AS visa \gset
SELECT credits.add_credits(42, '40.00', idempotency_key => 'checkout-7f3a') \g /dev/null
SELECT date, description, invoice, amount, status FROM history;
\! "$DEMO_DIR/demo/worker.sh" 2026-03-02T09:55:30Z
SELECT date, description, invoice, amount, status FROM history;

\echo
\echo '== Mar 02 09:56  The owner turns auto-recharge on: 25.00 whenever less than 10.00 is left'
\echo '   Shows: the billing page; nothing runs yet, so there is no burn rate and no end in sight.'
SET credits.clock = '2026-03-02 09:56:00+00';
SELECT credits.configure_auto_recharge(42, true, '10.00', '25.00') \g /dev/null
SELECT * FROM billing_page;
