-- The credits demo: one GPU-cloud project from its first deposit to running out of credits.
-- Time is driven by credits.clock so the story is the same on every run.
\set ON_ERROR_STOP on
\pset footer off
SET search_path = "$user", public, credits;

\echo
\echo '== 09:55  Project 42 opens an account, saves a card and buys 40 credits'
SET credits.clock = '2026-03-02 09:55:00+00';
SELECT credits.open_account(42);
SELECT credits.add_payment_method(42, 'pm_1NvisaDEMO', 'Visa •••• 4242') AS method_id;
SELECT credits.add_credits(42, '40.00', idempotency_key => 'checkout-7f3a') AS deposit_id \gset
\echo 'The deposit is pending until the payment worker charges the card:'
SELECT transaction_id, type, description, amount, status FROM credits.transaction_history WHERE project_id = 42;
\echo 'The payment worker claims the charge_requested event ...'
SELECT event_id, kind, payload->>'amount' AS amount, payload->>'provider_ref' AS provider_ref
  FROM credits.claim_events(10) WHERE project_id = 42 \gset ev_
\echo '... charges the card, completes the deposit with the invoice and acknowledges the event:'
SELECT credits.complete_deposit(42, :deposit_id, 'https://invoices.example/in_7f3a') AS new_balance;
SELECT credits.ack_event(:ev_event_id);

\echo
\echo '== 10:00  Two A100 instances and a 500 GB volume start'
SET credits.clock = '2026-03-02 10:00:00+00';
SELECT credits.start_instance(42, 'gpu-a100-1', '2.40');
SELECT credits.start_instance(42, 'gpu-a100-2', '2.40');
SELECT credits.attach_volume(42, 'vol-data-500g', '0.07');

\echo
\echo '== 10:00-10:59  The inference API is called (per request, and in batches from the gateway)'
SET credits.clock = '2026-03-02 10:12:00+00';
SELECT credits.record_usage(42, 'api:chat', '0.0042', idempotency_key => 'req-0001');
SELECT credits.record_usage(42, 'api:chat', '0.0042', idempotency_key => 'req-0001') AS retried_call_counted_once;
SELECT credits.record_usage_batch(array_fill(42::bigint, ARRAY[250]), array_fill('api:embed'::text, ARRAY[250]),
                                  array_fill('0.0008'::credits.credits, ARRAY[250])) AS batch_rows;

\echo
\echo '== 10:30  The dashboard while the hour runs: usage is accumulating'
SET credits.clock = '2026-03-02 10:30:00+00';
SELECT * FROM credits.balance_overview WHERE project_id = 42;
SELECT date, description, amount, status FROM credits.transaction_history WHERE project_id = 42;

\echo
\echo '== 11:00  pg_cron runs the hourly deduction'
SET credits.clock = '2026-03-02 11:00:00+00';
SELECT credits.run_hourly_deductions() AS usage_hours_completed;
SELECT * FROM credits.balance_overview WHERE project_id = 42;
SELECT date, type, description, invoice_url, amount, status FROM credits.transaction_history WHERE project_id = 42;

\echo
\echo '== 11:00-17:59  The instances keep running; the minute balance checks watch the runway'
SET credits.clock = '2026-03-02 17:59:00+00';
SELECT credits.run_hourly_deductions() AS usage_hours_completed;
SELECT credits.run_balance_checks() AS projects_acted_on;
SELECT * FROM credits.balance_overview WHERE project_id = 42;
SET credits.clock = '2026-03-02 18:12:00+00';
\echo 'At 18:12 the usage accrued since 18:00 has used up what is left: the check cuts the project off'
SELECT credits.run_balance_checks() AS projects_acted_on;
SELECT resource_id, kind, state, state_since FROM credits.resource_overview WHERE project_id = 42;
SELECT kind, resource_id, payload FROM credits.events WHERE project_id = 42 AND kind <> 'charge_requested' ORDER BY event_id;

\echo
\echo '== 19:00  The last hours are deducted: the balance lands on exactly zero, the rest is uncollected'
SET credits.clock = '2026-03-02 19:00:00+00';
SELECT credits.run_hourly_deductions() AS usage_hours_completed;
SELECT date, description, amount, status, uncollected FROM credits.transaction_history WHERE project_id = 42 LIMIT 4;
SELECT * FROM credits.balance_overview WHERE project_id = 42;
\echo 'Starting an instance at zero balance is refused:'
\set ON_ERROR_STOP off
SELECT credits.start_instance(42, 'gpu-a100-3', '2.40');
\set ON_ERROR_STOP on

\echo
\echo '== 19:10  A new deposit: the volume becomes accessible again; terminated instances stay terminated'
SET credits.clock = '2026-03-02 19:10:00+00';
SELECT credits.complete_deposit(42, credits.add_credits(42, '25.00'), 'https://invoices.example/in_8c21') AS new_balance;
SELECT resource_id, kind, state, state_since FROM credits.resource_overview WHERE project_id = 42;
SELECT * FROM credits.balance_overview WHERE project_id = 42;

\echo
\echo '== Invariants'
SELECT count(*) AS problems FROM credits.verify();
