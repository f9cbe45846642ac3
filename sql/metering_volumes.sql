\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/metering_helpers.sql
\set ECHO all
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
-- Volumes: billed for every microsecond they are available; available | inaccessible | deleted;
-- a deleted volume's id is never used again.  Projects 5100-5129, February 2026.

--
-- Two volumes attached at 10:00; they accrue like instances while available.
--
SET credits.clock = '2026-02-01 09:00+00';
SELECT pg_temp.funded(5101, '50.00');
SET credits.clock = '2026-02-01 10:00+00';
SELECT attach_volume(5101, 'vol-a', '0.24'), attach_volume(5101, 'vol-b', '0.12');
SELECT resource_id, kind, state, rate_per_hour, state_since FROM resource_overview
 WHERE project_id = 5101 ORDER BY resource_id;
SET credits.clock = '2026-02-01 10:30+00';
SELECT * FROM pg_temp.usage(5101);
SELECT current_balance, accumulating, available_balance, burn_rate, hours_remaining, runs_out_at
  FROM balance_overview WHERE project_id = 5101;
-- Attaching an available volume again at the same rate does nothing.
SELECT pg_temp.ledger_state() AS before \gset
SELECT attach_volume(5101, 'vol-a', '0.24');
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;

-- 11:00: the deduction books the running volumes up to the hour and completes hour 10.
SET credits.clock = '2026-02-01 11:00+00';
SELECT pg_temp.deduct();
SELECT * FROM pg_temp.usage(5101);

-- 11:15: vol-b is deleted: its 15 minutes of hour 11 are booked and it stops costing.
SET credits.clock = '2026-02-01 11:15+00';
SELECT delete_volume(5101, 'vol-b');
SELECT resource_id, state, state_since FROM resource_overview WHERE project_id = 5101 ORDER BY resource_id;
SELECT usage_hour, resource_id, amount, status FROM transactions
 WHERE project_id = 5101 AND type = 'usage' AND usage_hour = '2026-02-01 11:00+00' ORDER BY resource_id;
SELECT burn_rate FROM balance_overview WHERE project_id = 5101;

-- A deleted volume's id is never used again, by a volume or an instance; deleting it again
-- does nothing.
SET credits.clock = '2026-02-01 11:20+00';
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.fails($$SELECT credits.attach_volume(5101, 'vol-b', '0.12')$$);
SELECT pg_temp.fails($$SELECT credits.attach_volume(5101, 'vol-b', '0.50')$$);
SELECT pg_temp.fails($$SELECT credits.start_instance(5101, 'vol-b', '1.00')$$);
SELECT delete_volume(5101, 'vol-b');
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT resource_id, state, state_since FROM resource_overview WHERE project_id = 5101 AND resource_id = 'vol-b';

-- 11:30: vol-a changes rate to 0.48: 30 minutes at 0.24 are booked, the rest at 0.48.
SET credits.clock = '2026-02-01 11:30+00';
SELECT attach_volume(5101, 'vol-a', '0.48');
SELECT resource_id, state, rate_per_hour FROM resource_overview WHERE project_id = 5101 AND resource_id = 'vol-a';
SET credits.clock = '2026-02-01 12:00+00';
SELECT pg_temp.deduct();
SELECT * FROM pg_temp.usage(5101);
SELECT current_balance, accumulating FROM balance_overview WHERE project_id = 5101;

--
-- Bad calls: SQLSTATE and message, nothing written.
--
SET credits.clock = '2026-02-01 12:10+00';
SELECT start_instance(5101, 'gpu-1', '1.00');
SELECT open_account(5102);           -- no money
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.fails(stmt) AS result, stmt
  FROM unnest(ARRAY[
    $$SELECT credits.attach_volume(5999, 'vol-x', '0.10')$$,
    $$SELECT credits.attach_volume(NULL, 'vol-x', '0.10')$$,
    $$SELECT credits.attach_volume(5101, NULL, '0.10')$$,
    $$SELECT credits.attach_volume(5101, '', '0.10')$$,
    $$SELECT credits.attach_volume(5101, repeat('v', 201), '0.10')$$,
    $$SELECT credits.attach_volume(5101, 'vol-x', NULL)$$,
    $$SELECT credits.attach_volume(5101, 'vol-x', '0')$$,
    $$SELECT credits.attach_volume(5101, 'vol-x', '-0.000001')$$,
    $$SELECT credits.attach_volume(5101, 'gpu-1', '0.10')$$,        -- an instance
    $$SELECT credits.attach_volume(5102, 'vol-x', '0.10')$$,        -- no available balance
    $$SELECT credits.delete_volume(5101, 'vol-404')$$,
    $$SELECT credits.delete_volume(5101, 'gpu-1')$$,                -- an instance
    $$SELECT credits.delete_volume(5999, 'vol-a')$$,
    $$SELECT credits.delete_volume(5101, NULL)$$,
    $$SELECT credits.delete_volume(5101, '')$$,
    $$SELECT credits.delete_volume(5101, repeat('v', 201))$$]) AS stmt;
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT attach_volume(5101, repeat('v', 200), '0.10');
SELECT length(resource_id) AS id_length, state FROM resource_overview
 WHERE project_id = 5101 AND kind = 'volume' ORDER BY 1;
-- 12:30: everything goes; hour 12 is 0.24 (vol-a, 30 min at 0.48) + 0.333333 (gpu-1, 20 min
-- at 1.00) + 0.033333 (the new volume, 20 min at 0.10).
SET credits.clock = '2026-02-01 12:30+00';
SELECT stop_instance(5101, 'gpu-1'), delete_volume(5101, 'vol-a'), delete_volume(5101, repeat('v', 200));
SET credits.clock = '2026-02-01 13:00+00';
SELECT pg_temp.deduct();
SELECT date, left(description, 20) AS description, amount, status FROM transaction_history
 WHERE project_id = 5101 AND date = '2026-02-01 12:00+00' ORDER BY description;
SELECT current_balance, accumulating, burn_rate FROM balance_overview WHERE project_id = 5101;

--
-- Inaccessible: when the project runs out, available volumes become inaccessible and stop
-- costing; an inaccessible volume cannot be attached again by hand (it comes back with a
-- deposit) but can be deleted.
--
SET credits.clock = '2026-02-02 09:00+00';
SELECT pg_temp.funded(5103, '5.00');
SELECT attach_volume(5103, 'vol-1', '1.00'), attach_volume(5103, 'vol-2', '1.00');
-- 11:30: 5.00 of usage has accrued: the balance check locks the volumes.
SET credits.clock = '2026-02-02 11:30+00';
SELECT accumulating, available_balance FROM balance_overview WHERE project_id = 5103;
SELECT run_balance_checks() >= 1 AS acted;
SELECT resource_id, state, state_since FROM resource_overview WHERE project_id = 5103 ORDER BY resource_id;
SET credits.clock = '2026-02-02 11:45+00';
SELECT accumulating, burn_rate FROM balance_overview WHERE project_id = 5103;
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.fails($$SELECT credits.attach_volume(5103, 'vol-1', '1.00')$$);
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT delete_volume(5103, 'vol-2');
SELECT resource_id, state, state_since FROM resource_overview WHERE project_id = 5103 ORDER BY resource_id;
SELECT kind, resource_id FROM events WHERE project_id = 5103 AND kind <> 'charge_requested' ORDER BY event_id;
-- 12:00: the 5.00 accrued is deducted, the balance is exactly zero.
SET credits.clock = '2026-02-02 12:00+00';
SELECT pg_temp.deduct();
SELECT * FROM pg_temp.usage(5103);
SELECT current_balance, accumulating, available_balance FROM balance_overview WHERE project_id = 5103;

-- Clean up.
SET credits.clock = '2026-02-02 13:00+00';
SELECT delete_volume(5103, 'vol-1');
SELECT pg_temp.deduct();
SELECT project_id, current_balance, accumulating FROM balance_overview
 WHERE project_id BETWEEN 5100 AND 5129 ORDER BY project_id;
SELECT * FROM verify();
