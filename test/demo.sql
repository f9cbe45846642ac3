-- The credits demo: one GPU-cloud project from its first deposit to running out of credits.
-- Billing time is driven by credits.clock so the story is the same on every run; the payment
-- worker (test/worker/payment_worker.pl, with its fake provider) runs between the steps; it is
-- told the story's time through the database's default credits.clock.
\set ON_ERROR_STOP on
\pset footer off
SET search_path = "$user", public, credits;

\echo
\echo '== 09:55  Project 42 opens an account, saves a card and buys 40 credits'
SET credits.clock = '2026-03-02 09:55:00+00';
SELECT credits.open_account(42);
SELECT credits.add_payment_method(42, 'pm_visa_4242', 'Visa •••• 4242') AS visa \gset
SELECT credits.add_credits(42, '40.00', idempotency_key => 'checkout-7f3a') AS deposit_id;
\echo 'Pending until the payment worker has charged the card (a charge_requested event waits in the outbox):'
SELECT transaction_id, type, description, amount, status FROM credits.transaction_history WHERE project_id = 42;
ALTER DATABASE :"DBNAME" SET credits.clock FROM CURRENT;
\! perl "$DEMO_WORKER" --once
SELECT transaction_id, type, description, invoice_url, amount, status FROM credits.transaction_history WHERE project_id = 42;

\echo
\echo '== 09:56  Auto-recharge: below 10.00 available, charge 25.00 to the default card'
SELECT credits.configure_auto_recharge(42, true, '10.00', '25.00');

\echo
\echo '== 10:00  Two A100 instances and a 500 GB volume start; the inference API is called'
SET credits.clock = '2026-03-02 10:00:00+00';
SELECT credits.start_instance(42, 'gpu-a100-1', '2.40');
SELECT credits.start_instance(42, 'gpu-a100-2', '2.40');
SELECT credits.attach_volume(42, 'vol-data-500g', '0.07');
SET credits.clock = '2026-03-02 10:12:00+00';
SELECT credits.record_usage(42, 'api:chat', '0.0042', idempotency_key => 'req-0001');
SELECT credits.record_usage(42, 'api:chat', '0.0042', idempotency_key => 'req-0001') AS retried_call_counted_once;
SELECT credits.record_usage_batch(array_fill(42::bigint, ARRAY[250]), array_fill('api:embed'::text, ARRAY[250]),
                                  array_fill('0.0008'::credits.credits, ARRAY[250])) AS gateway_batch_rows;

\echo
\echo '== 10:30  The dashboard while the hour runs: usage is accumulating'
SET credits.clock = '2026-03-02 10:30:00+00';
SELECT * FROM credits.balance_overview WHERE project_id = 42;
SELECT date, description, amount, status FROM credits.transaction_history WHERE project_id = 42;

\echo
\echo '== 11:00  pg_cron runs the hourly deduction: hour 10 is billed'
SET credits.clock = '2026-03-02 11:00:00+00';
SELECT credits.run_hourly_deductions() AS usage_hours_completed;
SELECT * FROM credits.balance_overview WHERE project_id = 42;
SELECT date, type, description, amount, status FROM credits.transaction_history WHERE project_id = 42;

\echo
\echo '== 16:10  Hours 11-15 are billed; the deduction leaves less than 10.00 available and requests an auto-recharge'
SET credits.clock = '2026-03-02 16:10:00+00';
SELECT credits.run_hourly_deductions() AS usage_hours_completed;
SELECT credits.run_balance_checks() AS projects_acted_on;
ALTER DATABASE :"DBNAME" SET credits.clock FROM CURRENT;
\! perl "$DEMO_WORKER" --once
SELECT date, type, description, invoice_url, amount, status FROM credits.transaction_history
 WHERE project_id = 42 AND type <> 'usage';
SELECT * FROM credits.balance_overview WHERE project_id = 42;

\echo
\echo '== 16:15  The customer replaces the card with one that will be declined'
SET credits.clock = '2026-03-02 16:15:00+00';
SELECT credits.add_payment_method(42, 'pm_decline_mc_0005', 'Mastercard •••• 0005') AS mastercard;

\echo
\echo '== 21:20  Hours 16-20 are billed; the next auto-recharge is declined, and not retried a minute later'
SET credits.clock = '2026-03-02 21:20:00+00';
SELECT credits.run_hourly_deductions() AS usage_hours_completed;
SELECT credits.run_balance_checks() AS projects_acted_on;
ALTER DATABASE :"DBNAME" SET credits.clock FROM CURRENT;
\! perl "$DEMO_WORKER" --once
SET credits.clock = '2026-03-02 21:21:00+00';
SELECT credits.run_balance_checks() AS projects_acted_on_a_minute_later;
SELECT date, type, description, amount, status FROM credits.transaction_history
 WHERE project_id = 42 AND type <> 'usage';
SELECT * FROM credits.balance_overview WHERE project_id = 42;

\echo
\echo '== 23:19  The usage accrued since 23:00 has used up the balance: the minute check cuts the project off'
SET credits.clock = '2026-03-02 23:00:00+00';
SELECT credits.run_hourly_deductions() AS usage_hours_completed;
SET credits.clock = '2026-03-02 23:19:00+00';
SELECT credits.run_balance_checks() AS projects_acted_on;
SELECT resource_id, kind, state, state_since FROM credits.resource_overview WHERE project_id = 42;
SELECT kind, resource_id, payload FROM credits.events
 WHERE project_id = 42 AND kind <> 'charge_requested' ORDER BY event_id;
ALTER DATABASE :"DBNAME" SET credits.clock FROM CURRENT;
\! perl "$DEMO_WORKER" --once --quiet

\echo
\echo '== 00:00  The last hour is billed: the balance lands on exactly zero, the rest is uncollected'
SET credits.clock = '2026-03-03 00:00:00+00';
SELECT credits.run_hourly_deductions() AS usage_hours_completed;
SELECT date, description, amount, status, uncollected FROM credits.transaction_history
 WHERE project_id = 42 AND type = 'usage' LIMIT 3;
SELECT * FROM credits.balance_overview WHERE project_id = 42;
\echo 'Starting an instance at zero balance is refused:'
\set ON_ERROR_STOP off
\set VERBOSITY terse
SELECT credits.start_instance(42, 'gpu-a100-3', '2.40');
\set VERBOSITY default
\set ON_ERROR_STOP on

\echo
\echo '== 08:30  A deposit with the Visa card: the volume is accessible again (the instances stay terminated)'
SET credits.clock = '2026-03-03 08:30:00+00';
SELECT credits.add_credits(42, '60.00', :visa) AS deposit_id;
ALTER DATABASE :"DBNAME" SET credits.clock FROM CURRENT;
\! perl "$DEMO_WORKER" --once
SELECT resource_id, kind, state, state_since FROM credits.resource_overview WHERE project_id = 42;
SELECT * FROM credits.balance_overview WHERE project_id = 42;

\echo
\echo '== The whole history'
SELECT date, type, description, invoice_url, amount, status, uncollected
  FROM credits.transaction_history WHERE project_id = 42 AND (type <> 'usage' OR uncollected > '0');
SELECT count(*) AS usage_hours, sum(amount) AS billed, sum(uncollected) AS uncollected
  FROM credits.transaction_history WHERE project_id = 42 AND type = 'usage';

\echo
\echo '== Invariants (credits.verify(): no rows means every invariant holds)'
SELECT * FROM credits.verify();
