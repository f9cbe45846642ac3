\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/metering_helpers.sql
\set ECHO all
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
-- Zero balance: what happens when a balance reaches zero or accrued usage uses it up, and when
-- a deposit makes it positive again (src/zero_balance.c decides, 44_zero_balance.sql acts).
-- Projects 5400-5449, May 2026.


-- The zero-balance events of project p, oldest first.
CREATE FUNCTION pg_temp.events(p bigint) RETURNS TABLE (kind text, resource_id text, payload jsonb)
    LANGUAGE sql AS $$
    SELECT e.kind, e.resource_id, e.payload FROM credits.events e
     WHERE e.project_id = p AND e.kind <> 'charge_requested' ORDER BY e.event_id;
$$;


--
-- A deduction reaches zero: running instances are terminated, available volumes become
-- inaccessible, events are queued, in the same transaction.  Stopped instances and deleted
-- volumes are left as they are.
--
SET credits.clock = '2026-05-01 09:00+00';
SELECT pg_temp.funded(5401, '10.00');
SET credits.clock = '2026-05-01 10:00+00';
SELECT start_instance(5401, 'gpu-1', '4.00'), start_instance(5401, 'gpu-2', '1.00'),
       attach_volume(5401, 'vol-1', '0.50'), attach_volume(5401, 'vol-2', '0.50');
SET credits.clock = '2026-05-01 10:30+00';
SELECT stop_instance(5401, 'gpu-2'), delete_volume(5401, 'vol-2');
-- 11:00: hour 10 is 4.00 + 0.50 + 0.50 + 0.25 = 5.25, leaving 4.75.
SET credits.clock = '2026-05-01 11:00+00';
SELECT pg_temp.deduct();
SELECT pg_temp.totals(5401);
-- 12:00: hour 11 is 4.50 (gpu-1 and vol-1), leaving 0.25; nothing is cut off yet.
-- 13:00: hour 12 is 4.50 again but only 0.25 is left: the balance lands on zero (4.25
-- uncollected) and the project is cut off at 13:00.
SET credits.clock = '2026-05-01 12:00+00';
SELECT pg_temp.deduct();
SELECT pg_temp.totals(5401);
SELECT resource_id, state FROM resource_overview WHERE project_id = 5401 ORDER BY resource_id;
SELECT * FROM pg_temp.events(5401);
SET credits.clock = '2026-05-01 13:00+00';
SELECT pg_temp.deduct();
SELECT pg_temp.totals(5401);
SELECT usage_hour, sum(uncollected - amount) AS charged, sum(amount) AS taken, sum(uncollected) AS uncollected
  FROM transactions
 WHERE project_id = 5401 AND type = 'usage' GROUP BY usage_hour ORDER BY usage_hour;
SELECT resource_id, state, state_since FROM resource_overview WHERE project_id = 5401 ORDER BY resource_id;
SELECT * FROM pg_temp.events(5401);
SELECT current_balance, accumulating, available_balance, burn_rate, hours_remaining, runs_out_at
  FROM balance_overview WHERE project_id = 5401;

-- At zero nothing can be started or attached; nothing is written.
SET credits.clock = '2026-05-01 13:10+00';
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.fails(stmt) AS result, stmt
  FROM unnest(ARRAY[
    $$SELECT credits.start_instance(5401, 'gpu-3', '1.00')$$,       -- a new instance
    $$SELECT credits.start_instance(5401, 'gpu-2', '1.00')$$,       -- the stopped one
    $$SELECT credits.start_instance(5401, 'gpu-1', '4.00')$$,       -- the terminated one
    $$SELECT credits.attach_volume(5401, 'vol-3', '0.10')$$,        -- a new volume
    $$SELECT credits.attach_volume(5401, 'vol-1', '0.50')$$]) AS stmt;
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
-- Stopping and deleting still work; API usage is still recorded (paid if a deposit comes
-- before its hour is deducted, as here; otherwise it goes uncollected).
SELECT delete_volume(5401, 'vol-2'), stop_instance(5401, 'gpu-2');
SELECT record_usage(5401, 'api:chat', '0.10');
-- The balance check finds the project already cut off: no second balance_depleted.
SELECT run_balance_checks() >= 0 AS ran;
SELECT count(*) AS balance_depleted_events FROM events WHERE project_id = 5401 AND kind = 'balance_depleted';

--
-- A deposit makes the balance positive again: inaccessible volumes come back (events
-- queued, billing restarts), terminated instances stay terminated, new ones may start.
--
SET credits.clock = '2026-05-01 13:30+00';
SELECT pg_temp.deposit(5401, '20.00') AS new_balance;
SELECT pg_temp.totals(5401);
SELECT resource_id, state, state_since FROM resource_overview WHERE project_id = 5401 ORDER BY resource_id;
SELECT * FROM pg_temp.events(5401) OFFSET 3;
SELECT pg_temp.fails($$SELECT credits.start_instance(5401, 'gpu-1', '4.00')$$);
SELECT start_instance(5401, 'gpu-2', '1.00'), start_instance(5401, 'gpu-3', '2.00');
SELECT resource_id, state, state_since FROM resource_overview WHERE project_id = 5401 ORDER BY resource_id;
SET credits.clock = '2026-05-01 14:00+00';
SELECT pg_temp.deduct();
-- Hour 13: the 0.10 of API usage and 30 minutes of vol-1, gpu-2 and gpu-3, all collected.
SELECT usage_hour, resource_id, amount, uncollected FROM transactions
 WHERE project_id = 5401 AND usage_hour = '2026-05-01 13:00+00' ORDER BY resource_id;
SELECT pg_temp.totals(5401);

-- A second depletion queues a second balance_depleted.  At 20:00 the 3.50/h since 14:00
-- (21.00) has used up the 18.15: the balance check cuts the project off.
SET credits.clock = '2026-05-01 19:00+00';
SELECT run_balance_checks() >= 0 AS ran;
SELECT pg_temp.totals(5401);
SET credits.clock = '2026-05-01 20:00+00';
SELECT run_balance_checks() >= 1 AS acted;
SELECT resource_id, state, state_since FROM resource_overview WHERE project_id = 5401 ORDER BY resource_id;
SELECT kind, resource_id FROM pg_temp.events(5401) OFFSET 4;
SELECT pg_temp.deduct();
SELECT pg_temp.totals(5401);

--
-- run_balance_checks: accrued usage that uses up a positive balance cuts the project off
-- before any deduction; the deduction later takes exactly the balance.
--
SET credits.clock = '2026-05-02 09:00+00';
SELECT pg_temp.funded(5402, '5.00');
SET credits.clock = '2026-05-02 10:00+00';
SELECT start_instance(5402, 'gpu-1', '2.00'), attach_volume(5402, 'vol-1', '0.50');
-- 11:30: 3.75 accrued of 5.00: nothing to do.
SET credits.clock = '2026-05-02 11:30+00';
SELECT run_balance_checks() >= 0 AS ran;
SELECT pg_temp.totals(5402);
SELECT resource_id, state FROM resource_overview WHERE project_id = 5402 ORDER BY resource_id;
-- Not yet checked, but nothing more can start once the accrued usage equals the balance.
SET credits.clock = '2026-05-02 12:00+00';
SELECT current_balance, accumulating, available_balance FROM balance_overview WHERE project_id = 5402;
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.fails($$SELECT credits.start_instance(5402, 'gpu-2', '1.00')$$);
SELECT pg_temp.fails($$SELECT credits.attach_volume(5402, 'vol-2', '0.10')$$);
SELECT pg_temp.fails($$SELECT credits.start_instance(5402, 'gpu-1', '3.00')$$);   -- a rate change
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
-- 12:00: exactly 5.00 accrued: the check cuts the project off with its balance still 5.00.
SELECT run_balance_checks() >= 1 AS acted;
SELECT pg_temp.totals(5402);
SELECT resource_id, state, state_since FROM resource_overview WHERE project_id = 5402 ORDER BY resource_id;
SELECT kind, resource_id FROM pg_temp.events(5402);
SELECT current_balance, accumulating, available_balance, burn_rate FROM balance_overview WHERE project_id = 5402;
-- Checking again does nothing more.
SELECT pg_temp.ledger_state() AS before \gset
SELECT run_balance_checks() >= 0 AS ran;
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
-- The deduction takes the 5.00 exactly: zero, nothing uncollected, no second event.
SET credits.clock = '2026-05-02 12:05+00';
SELECT pg_temp.deduct();
SELECT pg_temp.totals(5402);
SELECT count(*) AS balance_depleted_events FROM events WHERE project_id = 5402 AND kind = 'balance_depleted';

--
-- A deposit that does not cover what has accrued leaves the project cut off; the next one
-- that does lifts it.
--
SET credits.clock = '2026-05-03 09:00+00';
SELECT pg_temp.funded(5403, '5.00');
SET credits.clock = '2026-05-03 10:00+00';
SELECT start_instance(5403, 'gpu-1', '20.00'), attach_volume(5403, 'vol-1', '0.60');
SET credits.clock = '2026-05-03 10:30+00';
SELECT run_balance_checks() >= 1 AS acted;
SELECT pg_temp.totals(5403);
SET credits.clock = '2026-05-03 10:40+00';
SELECT pg_temp.deposit(5403, '5.00') AS new_balance;
SELECT pg_temp.totals(5403);
SELECT resource_id, state FROM resource_overview WHERE project_id = 5403 ORDER BY resource_id;
SELECT pg_temp.fails($$SELECT credits.attach_volume(5403, 'vol-2', '0.10')$$);
SELECT pg_temp.deposit(5403, '5.00') AS new_balance;
SELECT pg_temp.totals(5403);
SELECT resource_id, state, state_since FROM resource_overview WHERE project_id = 5403 ORDER BY resource_id;
SELECT kind, resource_id FROM pg_temp.events(5403);
SET credits.clock = '2026-05-03 11:00+00';
SELECT delete_volume(5403, 'vol-1');
SELECT pg_temp.deduct();
SELECT pg_temp.totals(5403);

-- A project never funded that records API usage: its hour is charged and left uncollected in
-- full, but its balance did not reach zero (it was never above): no cut-off, no event.
SELECT open_account(5404);
SET credits.clock = '2026-05-03 11:10+00';
SELECT record_usage(5404, 'api:chat', '0.30');
SET credits.clock = '2026-05-03 12:00:05+00';
SELECT pg_temp.deduct();
SELECT * FROM pg_temp.usage(5404);
SELECT pg_temp.totals(5404);
SELECT count(*) AS events FROM pg_temp.events(5404);

SELECT project_id, current_balance, accumulating FROM balance_overview
 WHERE project_id BETWEEN 5400 AND 5449 ORDER BY project_id;
SELECT * FROM verify();
