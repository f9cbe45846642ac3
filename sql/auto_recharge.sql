\set ECHO none
\ir test/sql/helpers.sql
\set ECHO all
-- Auto-recharge (issue 6): configure_auto_recharge, the recharges that run_balance_checks and
-- run_hourly_deductions start, the one-pending rule, disarming after a failure, the
-- charge_requested payload, and how it meets zero balance.  Projects 6000-6999 only; the
-- database is shared with the other regress tests, so nothing here counts rows globally.
-- Each scenario has its own day and stops its resources at the end.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';

-- What a project's auto-recharges look like: type, status, amount, method, description.
CREATE FUNCTION pg_temp.recharges(p bigint) RETURNS TABLE (n bigint, status credits.transaction_status,
    amount credits.credits, provider_ref text, description text, invoice_url text, failure_reason text)
    LANGUAGE sql AS $$
    SELECT row_number() OVER (ORDER BY t.transaction_id), t.status, t.amount, m.provider_ref, t.description,
           t.invoice_url, t.failure_reason
      FROM credits.transactions t LEFT JOIN credits.payment_methods m USING (method_id)
     WHERE t.project_id = p AND t.type = 'auto_recharge'
     ORDER BY t.transaction_id;
$$;
-- The id of the project's pending auto-recharge (null when none).
CREATE FUNCTION pg_temp.pending_recharge(p bigint) RETURNS bigint LANGUAGE sql AS $$
    SELECT t.transaction_id FROM credits.transactions t
     WHERE t.project_id = p AND t.type = 'auto_recharge' AND t.status = 'pending';
$$;
-- The project's events in order, without ids.
CREATE FUNCTION pg_temp.events(p bigint) RETURNS TABLE (kind text, resource_id text, payload jsonb)
    LANGUAGE sql AS $$
    SELECT e.kind, e.resource_id, e.payload - 'transaction_id' - 'method_id'
      FROM credits.events e WHERE e.project_id = p ORDER BY e.event_id;
$$;
-- Balance, available balance and auto-recharge state of a project.
CREATE FUNCTION pg_temp.position(p bigint) RETURNS TABLE (balance credits.credits, available credits.credits,
    depleted boolean, enabled boolean, armed boolean)
    LANGUAGE sql AS $$
    SELECT a.balance, credits.available_balance(a.project_id), a.depleted, r.enabled, r.armed
      FROM credits.accounts a LEFT JOIN credits.auto_recharge r USING (project_id)
     WHERE a.project_id = p;
$$;
-- fails(stmt) with the id given shown as <id> (ids depend on what ran before in this database).
CREATE FUNCTION pg_temp.refused(stmt text, id bigint) RETURNS text LANGUAGE sql AS $$
    SELECT regexp_replace(pg_temp.fails(stmt), '\m' || id || '\M', '<id>', 'g');
$$;
-- Opens a project with a completed deposit of amount on a default card named after it.
CREATE FUNCTION pg_temp.funded(p bigint, amount credits.credits) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM credits.open_account(p);
    PERFORM credits.add_payment_method(p, 'pm_card_' || p, 'Visa ' || p);
    PERFORM credits.complete_deposit(p, credits.add_credits(p, amount), 'https://invoices.example/inv_' || p);
END $$;

--
-- Validation: every bad call raises a clear error with its SQLSTATE and writes nothing.
--
SET credits.clock = '2026-03-02 09:00+00';
SELECT pg_temp.funded(6001, '20.00');
SELECT credits.open_account(6002);                        -- no payment method at all
SELECT credits.add_payment_method(6001, 'pm_spare_6001', 'Spare', false) AS spare_6001 \gset
SELECT credits.open_account(6004);
SELECT credits.add_payment_method(6004, 'pm_card_6004') AS card_6004 \gset
SELECT pg_temp.ledger_state() AS before \gset
SELECT stmt, pg_temp.fails(stmt) FROM (VALUES
    ('SELECT credits.configure_auto_recharge(6001, true, ''10.00'', ''4.99'')'),
    ('SELECT credits.configure_auto_recharge(6001, true, ''10.00'', ''0'')'),
    ('SELECT credits.configure_auto_recharge(6001, true, ''10.00'', ''-5.00'')'),
    ('SELECT credits.configure_auto_recharge(6001, false, ''10.00'', ''4.99'')'),
    ('SELECT credits.configure_auto_recharge(6001, true, ''-0.01'', ''25.00'')'),
    ('SELECT credits.configure_auto_recharge(NULL, true, ''10.00'', ''25.00'')'),
    ('SELECT credits.configure_auto_recharge(6001, NULL, ''10.00'', ''25.00'')'),
    ('SELECT credits.configure_auto_recharge(6001, true, NULL, ''25.00'')'),
    ('SELECT credits.configure_auto_recharge(6001, true, ''10.00'', NULL)'),
    ('SELECT credits.configure_auto_recharge(6999, true, ''10.00'', ''25.00'')'),
    ('SELECT credits.configure_auto_recharge(6001, true, ''10.00'', ''25.00'', -1)'),
    ('SELECT credits.configure_auto_recharge(6002, true, ''10.00'', ''25.00'')')) AS v(stmt);
-- Another project's method is not a method of this one.
SELECT pg_temp.refused(format('SELECT credits.configure_auto_recharge(6001, true, ''10.00'', ''25.00'', %s)', :card_6004), :card_6004);
-- A removed method is not usable; neither is a project whose only card was removed.
SELECT credits.remove_payment_method(6004, :card_6004);
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused(format('SELECT credits.configure_auto_recharge(6004, true, ''10.00'', ''25.00'', %s)', :card_6004), :card_6004);
SELECT pg_temp.fails('SELECT credits.configure_auto_recharge(6004, true, ''10.00'', ''25.00'')');
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;

-- A disabled configuration needs no payment method; the amount still obeys the minimum.
SELECT credits.configure_auto_recharge(6002, false, '10.00', '25.00');
SELECT enabled, threshold, amount, method_id, armed FROM credits.auto_recharge WHERE project_id = 6002;
-- Exactly the minimum is accepted, and so is a threshold of zero.
SELECT credits.configure_auto_recharge(6001, true, '0', '5.00');
SELECT enabled, threshold, amount, method_id IS NULL AS uses_default, armed
  FROM credits.auto_recharge WHERE project_id = 6001;
-- The method auto-recharge charges cannot be removed while it is enabled: not the configured
-- one, and not the default one when it charges the default.
SELECT method_id AS card_6001 FROM credits.payment_methods WHERE provider_ref = 'pm_card_6001' \gset
SELECT pg_temp.refused(format('SELECT credits.remove_payment_method(6001, %s)', :card_6001), :card_6001);
SELECT credits.configure_auto_recharge(6001, true, '0', '5.00', :spare_6001);
SELECT pg_temp.refused(format('SELECT credits.remove_payment_method(6001, %s)', :spare_6001), :spare_6001);
-- Disabled, it holds no method: the method can go.
SELECT credits.configure_auto_recharge(6001, false, '0', '5.00', :spare_6001);
SELECT credits.remove_payment_method(6001, :spare_6001);
SELECT * FROM pg_temp.position(6001);
SELECT * FROM pg_temp.recharges(6001);

--
-- Threshold crossed by a deduction: no balance check runs during the hour; the hourly run
-- deducts 12.00 from 20.00 and starts the recharge (charged to the configured method, not
-- the default one).
--
SET credits.clock = '2026-03-03 09:00+00';
SELECT pg_temp.funded(6010, '20.00');
SELECT credits.add_payment_method(6010, 'pm_amex_6010', 'Amex', false) AS amex_6010 \gset
SELECT credits.configure_auto_recharge(6010, true, '10.00', '25.00', :amex_6010);
SELECT credits.start_instance(6010, 'gpu-a', '12.00');
SET credits.clock = '2026-03-03 10:00+00';
SELECT * FROM pg_temp.position(6010);                            -- available 8.00: below, nothing yet
SELECT * FROM pg_temp.recharges(6010);
SELECT credits.run_hourly_deductions() >= 1 AS deducted;
SELECT * FROM pg_temp.position(6010);
SELECT * FROM pg_temp.recharges(6010);
-- It shows in the history as a pending auto-recharge with a positive amount and the date it
-- was requested.
SELECT date, type, description, invoice_url, amount, status, uncollected
  FROM credits.transaction_history WHERE project_id = 6010 ORDER BY date, type;

-- The charge_requested event carries what a payment worker needs: the transaction, its
-- amount and type, the method and its provider_ref.
SELECT e.kind, e.transaction_id = pg_temp.pending_recharge(6010) AS same_transaction,
       (e.payload->>'transaction_id')::bigint = e.transaction_id AS payload_transaction,
       e.payload->>'type' AS type, e.payload->>'amount' AS amount,
       (e.payload->>'method_id')::bigint = :amex_6010 AS payload_method,
       e.payload->>'provider_ref' AS provider_ref, e.payload->'idempotency_key' AS idempotency_key,
       e.resource_id, e.claims, e.acked_at
  FROM credits.events e
 WHERE e.project_id = 6010 AND e.kind = 'charge_requested' AND e.transaction_id = pg_temp.pending_recharge(6010);

--
-- At most one pending: further checks and runs start none, and the database itself refuses
-- a second pending auto-recharge.
--
SELECT pending_recharge AS pending_6010 FROM pg_temp.pending_recharge(6010) \gset
SET credits.clock = '2026-03-03 10:20+00';                 -- 4.00 accrued: 4.00 available
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT credits.run_hourly_deductions() >= 0 AS deducted;
SELECT pg_temp.pending_recharge(6010) = :pending_6010 AS same_one_pending;
SELECT count(*) AS charge_requests FROM credits.events WHERE project_id = 6010 AND kind = 'charge_requested';
SELECT pg_temp.fails($$INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description)
                      VALUES (6010, 'auto_recharge', 'pending', '25.00', credits.now(), 'second')$$);
SELECT * FROM credits.verify(6010);

-- Completing it raises the balance at once (8.00 + 25.00) and keeps it armed.
SET credits.clock = '2026-03-03 10:30+00';
SELECT credits.complete_deposit(6010, :pending_6010, 'https://invoices.example/inv_ar_6010') AS new_balance;
SELECT * FROM pg_temp.position(6010);
SELECT * FROM pg_temp.recharges(6010);
-- Completing or failing it again, or through another project, is refused and changes nothing.
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused(format('SELECT credits.complete_deposit(6010, %s)', :pending_6010), :pending_6010);
SELECT pg_temp.refused(format('SELECT credits.fail_deposit(6010, %s)', :pending_6010), :pending_6010);
SELECT pg_temp.refused(format('SELECT credits.complete_deposit(6001, %s)', :pending_6010), :pending_6010);
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
-- It stays armed: when the available balance falls below the threshold again, the next
-- check starts a new recharge (11:00: 33.00 - 12.00 = 21.00; 11:40: 8.00 accrued, 13.00
-- available; 11:56: 11.20 accrued, 9.80 available).
SET credits.clock = '2026-03-03 11:00+00';
SELECT credits.run_hourly_deductions() >= 1 AS deducted;
SET credits.clock = '2026-03-03 11:40+00';
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT * FROM pg_temp.position(6010);
SELECT count(*) AS recharges FROM pg_temp.recharges(6010);
SET credits.clock = '2026-03-03 11:56+00';
SELECT credits.run_balance_checks() >= 1 AS checked;
SELECT * FROM pg_temp.position(6010);
SELECT * FROM pg_temp.recharges(6010);
SELECT credits.stop_instance(6010, 'gpu-a');

--
-- Threshold crossed by accrued, not yet deducted usage: run_balance_checks compares the
-- available balance (balance - accumulating), not the balance.  The default method is
-- charged: the one that is default when the recharge starts.
--
SET credits.clock = '2026-03-04 09:00+00';
SELECT pg_temp.funded(6011, '20.00');
SELECT credits.configure_auto_recharge(6011, true, '10.00', '30.00');
SELECT credits.add_payment_method(6011, 'pm_new_card_6011', 'New card') IS NOT NULL AS new_default;
SELECT credits.start_instance(6011, 'gpu-b', '12.00');
SET credits.clock = '2026-03-04 09:45+00';                 -- 9.00 accrued: 11.00 available
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT * FROM pg_temp.position(6011);
SELECT * FROM pg_temp.recharges(6011);
SET credits.clock = '2026-03-04 09:55+00';                 -- 11.00 accrued: 9.00 available
SELECT current_balance, accumulating, available_balance, auto_recharge_enabled
  FROM credits.balance_overview WHERE project_id = 6011;
SELECT credits.run_balance_checks() >= 1 AS checked;
SELECT * FROM pg_temp.position(6011);
SELECT * FROM pg_temp.recharges(6011);
SELECT kind, payload FROM pg_temp.events(6011);
SELECT credits.stop_instance(6011, 'gpu-b');

--
-- A manual run_balance_checks: a threshold set above the balance starts nothing by itself;
-- the next check (by pg_cron or by hand) starts the recharge.
--
SET credits.clock = '2026-03-05 09:00+00';
SELECT pg_temp.funded(6012, '6.00');
SELECT credits.configure_auto_recharge(6012, true, '10.00', '15.00');
SELECT * FROM pg_temp.recharges(6012);
SELECT credits.run_balance_checks() >= 1 AS checked;
SELECT * FROM pg_temp.recharges(6012);

--
-- A disabled configuration does nothing, however low the balance; enabling it arms it.
--
SELECT pg_temp.funded(6013, '5.00');
SELECT credits.configure_auto_recharge(6013, false, '10.00', '15.00');
SELECT credits.start_instance(6013, 'gpu-c', '1.00');
SET credits.clock = '2026-03-05 12:00+00';
SELECT credits.run_hourly_deductions() >= 1 AS deducted;
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT * FROM pg_temp.position(6013);
SELECT count(*) AS recharges FROM pg_temp.recharges(6013);
SELECT auto_recharge_enabled FROM credits.balance_overview WHERE project_id = 6013;
SELECT credits.configure_auto_recharge(6013, true, '10.00', '15.00');
SELECT credits.run_balance_checks() >= 1 AS checked;
SELECT * FROM pg_temp.recharges(6013);
SELECT credits.stop_instance(6013, 'gpu-c');

--
-- A failed auto-recharge disarms: no new one starts (however many checks run) until a
-- deposit completes, or until the settings are saved again.
--
SET credits.clock = '2026-03-06 09:00+00';
SELECT pg_temp.funded(6014, '8.00');
SELECT credits.configure_auto_recharge(6014, true, '10.00', '20.00');
SELECT credits.run_balance_checks() >= 1 AS checked;
SELECT credits.fail_deposit(6014, pg_temp.pending_recharge(6014), 'card_declined');
SELECT * FROM pg_temp.position(6014);
SET credits.clock = '2026-03-06 09:01+00';
SELECT credits.run_balance_checks() >= 0 AS checked;
SET credits.clock = '2026-03-06 10:00+00';
SELECT credits.run_hourly_deductions() >= 0 AS deducted;
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT * FROM pg_temp.recharges(6014);
-- A manual deposit that is still pending, or one that fails, does not re-arm it ...
SELECT credits.add_credits(6014, '5.00') AS manual_6014 \gset
SELECT credits.fail_deposit(6014, :manual_6014, 'insufficient_funds');
SELECT credits.add_credits(6014, '5.00') AS manual_6014 \gset
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT * FROM pg_temp.position(6014);
SELECT count(*) AS recharges FROM pg_temp.recharges(6014);
-- ... completing it does.  13.00 is above the threshold: nothing starts until usage takes
-- the available balance below it.
SELECT credits.complete_deposit(6014, :manual_6014, 'https://invoices.example/inv_m_6014') AS new_balance;
SELECT * FROM pg_temp.position(6014);
SELECT credits.start_instance(6014, 'gpu-d', '6.00');
SET credits.clock = '2026-03-06 10:40+00';                 -- 4.00 accrued: 9.00 available
SELECT credits.run_balance_checks() >= 1 AS checked;
SELECT * FROM pg_temp.recharges(6014);
-- Fails again: disarmed again; saving the settings (even unchanged) re-arms it.
SELECT credits.fail_deposit(6014, pg_temp.pending_recharge(6014), 'card_declined');
SET credits.clock = '2026-03-06 10:41+00';
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT count(*) AS recharges, pg_temp.pending_recharge(6014) IS NULL AS none_pending FROM pg_temp.recharges(6014);
SELECT credits.configure_auto_recharge(6014, true, '10.00', '20.00');
SELECT * FROM pg_temp.position(6014);
SELECT credits.run_balance_checks() >= 1 AS checked;
SELECT * FROM pg_temp.recharges(6014);
SELECT credits.stop_instance(6014, 'gpu-d');
SELECT credits.complete_deposit(6014, pg_temp.pending_recharge(6014), 'https://invoices.example/inv_ar_6014') AS new_balance;

--
-- Zero balance: a pending auto-recharge does not stop the cut-off.  When it completes the
-- balance is positive again: volumes unlock (volume_available), instances stay terminated.
--
SET credits.clock = '2026-03-07 09:00+00';
SELECT pg_temp.funded(6015, '10.00');
SELECT credits.configure_auto_recharge(6015, true, '5.00', '20.00');
SELECT credits.start_instance(6015, 'gpu-e', '6.00');
SELECT credits.attach_volume(6015, 'vol-e', '0.60');
SET credits.clock = '2026-03-07 09:50+00';                 -- 5.50 accrued: 4.50 available
SELECT credits.run_balance_checks() >= 1 AS checked;
SELECT pg_temp.pending_recharge(6015) AS pending_6015 \gset
SET credits.clock = '2026-03-07 10:00+00';
SELECT credits.run_hourly_deductions() >= 1 AS deducted;   -- 10.00 - 6.60 = 3.40
SET credits.clock = '2026-03-07 10:35+00';                 -- 3.85 accrued: used up
SELECT credits.run_balance_checks() >= 1 AS checked;
SELECT * FROM pg_temp.position(6015);
SELECT resource_id, kind, state, state_since FROM credits.resource_overview WHERE project_id = 6015 ORDER BY resource_id;
SELECT pg_temp.pending_recharge(6015) = :pending_6015 AS still_pending;
SELECT pg_temp.fails('SELECT credits.start_instance(6015, ''gpu-f'', ''1.00'')');
SET credits.clock = '2026-03-07 10:40+00';
SELECT credits.complete_deposit(6015, :pending_6015, 'https://invoices.example/inv_ar_6015') AS new_balance;
SELECT * FROM pg_temp.position(6015);
SELECT resource_id, kind, state, state_since FROM credits.resource_overview WHERE project_id = 6015 ORDER BY resource_id;
SELECT * FROM pg_temp.events(6015);
-- The hour is deducted in full (3.50 + 0.35 before the cut-off, 0.20 since the volume came
-- back); 19.35 is above the threshold: no new recharge.
SET credits.clock = '2026-03-07 11:00+00';
SELECT credits.run_hourly_deductions() >= 1 AS deducted;
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT * FROM pg_temp.position(6015);
SELECT count(*) AS recharges FROM pg_temp.recharges(6015);
SELECT credits.delete_volume(6015, 'vol-e');

-- A deduction that takes the balance to exactly zero while a recharge is pending cuts the
-- project off too (the uncollected rest is recorded); the recharge then brings it back.
SET credits.clock = '2026-03-08 09:00+00';
SELECT pg_temp.funded(6016, '5.00');
SELECT credits.configure_auto_recharge(6016, true, '4.00', '10.00');
SELECT credits.start_instance(6016, 'gpu-g', '3.00');
SELECT credits.attach_volume(6016, 'vol-g', '3.00');
SET credits.clock = '2026-03-08 09:10+00';                 -- 1.00 accrued: 4.00 available
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT count(*) AS recharges FROM pg_temp.recharges(6016);
SET credits.clock = '2026-03-08 09:20+00';                 -- 2.00 accrued: 3.00 available
SELECT credits.run_balance_checks() >= 1 AS checked;
SELECT * FROM pg_temp.recharges(6016);
-- (no balance check runs until the hour ends)
SET credits.clock = '2026-03-08 10:00+00';                 -- 6.00 to deduct from 5.00
SELECT credits.run_hourly_deductions() >= 1 AS deducted;
SELECT * FROM pg_temp.position(6016);
SELECT description, amount, status, uncollected FROM credits.transaction_history
 WHERE project_id = 6016 AND type = 'usage' ORDER BY description;
SELECT resource_id, state FROM credits.resource_overview WHERE project_id = 6016 ORDER BY resource_id;
SELECT pg_temp.pending_recharge(6016) IS NOT NULL AS still_pending;
SELECT credits.complete_deposit(6016, pg_temp.pending_recharge(6016)) AS new_balance;
SELECT * FROM pg_temp.position(6016);
SELECT resource_id, state FROM credits.resource_overview WHERE project_id = 6016 ORDER BY resource_id;
SELECT kind, resource_id FROM pg_temp.events(6016);
SELECT credits.delete_volume(6016, 'vol-g');

-- A project never funded, with auto-recharge configured and nothing accruing, has used nothing
-- up: the check requests the first recharge and does not cut the project off (no
-- balance_depleted); the recharge's completion funds it.
SET credits.clock = '2026-03-09 09:00+00';
SELECT credits.open_account(6017);
SELECT credits.add_payment_method(6017, 'pm_card_6017', 'Visa 6017') > 0 AS method_added;
SELECT credits.configure_auto_recharge(6017, true, '16.00', '40.00');
SELECT credits.run_balance_checks() >= 1 AS checked;
SELECT * FROM pg_temp.position(6017);
SELECT kind, payload->>'amount' AS amount FROM pg_temp.events(6017);
SELECT credits.complete_deposit(6017, pg_temp.pending_recharge(6017)) AS new_balance;
SELECT * FROM pg_temp.position(6017);

--
-- Everything this test did keeps the ledger's invariants; leave nothing billing or armed.
--
SELECT r.project_id, credits.configure_auto_recharge(r.project_id, false, r.threshold, r.amount)
  FROM credits.auto_recharge r
 WHERE r.project_id BETWEEN 6000 AND 6999 AND r.enabled ORDER BY r.project_id;
SELECT count(*) AS still_billing FROM credits.resources
 WHERE project_id BETWEEN 6000 AND 6999 AND state IN ('running', 'available');
SELECT * FROM credits.verify() WHERE project_id BETWEEN 6000 AND 6999;
RESET credits.clock;
