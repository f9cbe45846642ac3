\echo
\echo '== Mar 03 11:00  The owner asks for 20.00 of the 60.00 deposit back'
\echo '   Shows: only paid credit not yet used can be refunded; the 20.00 is held (not available)'
\echo '   until the payment worker has refunded the card, then leaves the balance.'
SET credits.clock = '2026-03-03 11:00:00+00';
SELECT transaction_id AS deposit FROM credits.transactions
 WHERE project_id = 42 AND type = 'deposit' AND amount = '60.00' \gset
SELECT pg_temp.attempt(format('SELECT credits.refund_deposit(42, %s, %L)', :deposit, '100.00')) AS too_much \gset
\echo '100.00 back:' :too_much
SELECT credits.refund_deposit(42, :deposit, '20.00', 'not needed') \g /dev/null
SELECT date, description, amount, status FROM history WHERE type IN ('deposit', 'refund');
SELECT * FROM billing_page;
\! "$DEMO_DIR/demo/worker.sh" 2026-03-03T11:00:30Z
SELECT date, description, amount, status FROM history WHERE type IN ('deposit', 'refund');
SELECT * FROM billing_page;
