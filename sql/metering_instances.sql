\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/metering_helpers.sql
\set ECHO all
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
-- Instances: per-second (per-microsecond) billing split at UTC hour boundaries, one usage
-- transaction per (project, resource, hour), rounded half to even once per hour.
-- Projects 5001-5029.

--
-- Started 10:20, stopped 12:40 at 3.00/h: 2.00 + 3.00 + 2.00 for hours 10, 11, 12.
--
SET credits.clock = '2026-01-01 09:00+00';
SELECT pg_temp.funded(5001, '100.00');
SET credits.clock = '2026-01-01 10:20+00';
SELECT start_instance(5001, 'gpu-1', '3.00');
SELECT project_id, resource_id, kind, state, rate_per_hour, state_since
  FROM resource_overview WHERE project_id = 5001;
-- Nothing has accrued at the moment it starts: no usage row yet.
SELECT * FROM pg_temp.usage(5001);

-- 10:50: half an hour at 3.00/h is accumulating; no row is stored yet (null transaction_id).
SET credits.clock = '2026-01-01 10:50+00';
SELECT * FROM pg_temp.usage(5001);
SELECT count(*) AS stored_usage_rows FROM transactions WHERE project_id = 5001 AND type = 'usage';
SELECT current_balance, accumulating, available_balance, burn_rate, hours_remaining, runs_out_at
  FROM balance_overview WHERE project_id = 5001;

-- 11:30: hour 10 has 2.00 (40 minutes), hour 11 has 1.50 so far; both accumulating.
SET credits.clock = '2026-01-01 11:30+00';
SELECT * FROM pg_temp.usage(5001);
SELECT current_balance, accumulating, available_balance, burn_rate, hours_remaining, runs_out_at
  FROM balance_overview WHERE project_id = 5001;

-- 12:40: stopped.  Its time is booked into three stored accumulating rows.
SET credits.clock = '2026-01-01 12:40+00';
SELECT stop_instance(5001, 'gpu-1');
SELECT state, state_since FROM resource_overview WHERE project_id = 5001;
SELECT usage_hour, status, amount, accrued_units, created_at = usage_hour AS dated_at_hour_start
  FROM transactions WHERE project_id = 5001 AND type = 'usage' ORDER BY usage_hour;
SELECT * FROM pg_temp.usage(5001);
-- Stopped, nothing more accrues.
SET credits.clock = '2026-01-01 12:59+00';
SELECT accumulating, burn_rate FROM balance_overview WHERE project_id = 5001;
-- Stopping again does nothing.
SELECT pg_temp.ledger_state() AS before \gset
SELECT stop_instance(5001, 'gpu-1');
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;

-- 13:00: the deduction completes the three hours: 100.00 - 7.00.
SET credits.clock = '2026-01-01 13:00+00';
SELECT pg_temp.deduct();
SELECT * FROM pg_temp.usage(5001);
SELECT current_balance, accumulating, available_balance, burn_rate, hours_remaining
  FROM balance_overview WHERE project_id = 5001;

--
-- Stopping and starting again within one hour adds to the same usage row, and the hour is
-- rounded once: 10 + 15 minutes at 2.00/h = 0.8333333... -> 0.833333.
--
SET credits.clock = '2026-01-02 09:00+00';
SELECT pg_temp.funded(5002, '20.00');
SET credits.clock = '2026-01-02 10:05+00';
SELECT start_instance(5002, 'gpu-1', '2.00');
SET credits.clock = '2026-01-02 10:15+00';
SELECT stop_instance(5002, 'gpu-1');
SELECT usage_hour, amount, accrued_units FROM transactions WHERE project_id = 5002 AND type = 'usage';
SET credits.clock = '2026-01-02 10:30+00';
SELECT start_instance(5002, 'gpu-1', '2.00');
SELECT state, state_since FROM resource_overview WHERE project_id = 5002;
-- 10:40 while running: the stored 10 minutes plus 10 live minutes show as one row.
SET credits.clock = '2026-01-02 10:40+00';
SELECT * FROM pg_temp.usage(5002);
SET credits.clock = '2026-01-02 10:45+00';
SELECT stop_instance(5002, 'gpu-1');
SELECT usage_hour, amount, accrued_units FROM transactions WHERE project_id = 5002 AND type = 'usage';
-- Started again in a later hour: a new row for that hour only.
SET credits.clock = '2026-01-02 11:59:30+00';
SELECT start_instance(5002, 'gpu-1', '2.00');
SET credits.clock = '2026-01-02 12:00:30+00';
SELECT stop_instance(5002, 'gpu-1');
SELECT usage_hour, amount, accrued_units FROM transactions WHERE project_id = 5002 AND type = 'usage'
 ORDER BY usage_hour;
SET credits.clock = '2026-01-02 13:00+00';
SELECT pg_temp.deduct();
SELECT * FROM pg_temp.usage(5002);

--
-- Rate change: start_instance on a running instance with another rate books the time so far
-- at the old rate.  The same rate again does nothing.
--
SET credits.clock = '2026-01-03 09:00+00';
SELECT pg_temp.funded(5003, '20.00');
SET credits.clock = '2026-01-03 10:00+00';
SELECT start_instance(5003, 'gpu-1', '1.20');
SET credits.clock = '2026-01-03 10:30+00';
SELECT start_instance(5003, 'gpu-1', '2.40');
SELECT usage_hour, amount FROM transactions WHERE project_id = 5003 AND type = 'usage';
SELECT state, rate_per_hour, state_since FROM resource_overview WHERE project_id = 5003;
SET credits.clock = '2026-01-03 10:45+00';
SELECT pg_temp.ledger_state() AS before \gset
SELECT start_instance(5003, 'gpu-1', '2.40');
SELECT pg_temp.ledger_state() = :'before' AS same_rate_writes_nothing;
-- 10:45: hour 10 has 0.60 stored (30 min at 1.20) and 0.60 live (15 min at 2.40).
SELECT * FROM pg_temp.usage(5003);
-- 11:15: hour 10 has 0.60 + 1.20; hour 11 has 0.60 live.
SET credits.clock = '2026-01-03 11:15+00';
SELECT * FROM pg_temp.usage(5003);
SELECT burn_rate FROM balance_overview WHERE project_id = 5003;
SELECT stop_instance(5003, 'gpu-1');
SELECT usage_hour, amount FROM transactions WHERE project_id = 5003 AND type = 'usage' ORDER BY usage_hour;
-- A stopped instance may be started again at any rate.
SET credits.clock = '2026-01-03 11:30+00';
SELECT start_instance(5003, 'gpu-1', '0.50');
SELECT state, rate_per_hour, state_since FROM resource_overview WHERE project_id = 5003;
SET credits.clock = '2026-01-03 11:42+00';
SELECT stop_instance(5003, 'gpu-1');
SELECT usage_hour, amount FROM transactions WHERE project_id = 5003 AND type = 'usage' ORDER BY usage_hour;
SET credits.clock = '2026-01-03 12:00+00';
SELECT pg_temp.deduct();
SELECT current_balance FROM balance_overview WHERE project_id = 5003;

--
-- Rounding: exact rate-microseconds, rounded half to even once per hour.
--
SET credits.clock = '2026-01-04 09:00+00';
SELECT pg_temp.funded(5004, '20.00');
-- 1.00/h for one second: 1/3600 = 0.000277... -> 0.000278.
SET credits.clock = '2026-01-04 10:00:00+00';
SELECT start_instance(5004, 'one-second', '1.00');
SET credits.clock = '2026-01-04 10:00:01+00';
SELECT stop_instance(5004, 'one-second');
-- Three separate seconds in one hour: 3/3600 = 0.000833... -> 0.000833, not 3 x 0.000278.
SELECT start_instance(5004, 'three-seconds', '1.00');
SET credits.clock = '2026-01-04 10:00:02+00';
SELECT stop_instance(5004, 'three-seconds');
SET credits.clock = '2026-01-04 10:10:00+00';
SELECT start_instance(5004, 'three-seconds', '1.00');
SET credits.clock = '2026-01-04 10:10:01+00';
SELECT stop_instance(5004, 'three-seconds');
SET credits.clock = '2026-01-04 10:20:00+00';
SELECT start_instance(5004, 'three-seconds', '1.00');
SET credits.clock = '2026-01-04 10:20:01+00';
SELECT stop_instance(5004, 'three-seconds');
-- Ties: 1.8 ms at 1.00/h, 3.00/h and 5.00/h is 0.5, 1.5 and 2.5 micro-credits: 0, 2 and 2.
SET credits.clock = '2026-01-04 10:30:00+00';
SELECT start_instance(5004, 'tie-0.5', '1.00'), start_instance(5004, 'tie-1.5', '3.00'),
       start_instance(5004, 'tie-2.5', '5.00');
SET credits.clock = '2026-01-04 10:30:00.0018+00';
SELECT stop_instance(5004, 'tie-0.5'), stop_instance(5004, 'tie-1.5'), stop_instance(5004, 'tie-2.5');
SELECT resource_id, amount, accrued_units, accrued_units / 3600000000 AS exact_micro_credits
  FROM transactions WHERE project_id = 5004 AND type = 'usage' ORDER BY resource_id;
-- The rounding function itself, at and next to the ties, both signs.
SELECT units, _accrued_amount(units) AS amount
  FROM unnest(ARRAY[0, 1799999999, 1800000000, 1800000001, 5400000000, 9000000000,
                    -1800000000, -5400000000, -9000000000, 1000000000000]::numeric[]) AS units;
SELECT pg_temp.fails('SELECT credits._accrued_amount(1.5)');
-- The deduction takes the rounded hour amounts: 20.00 - (0.000278 + 0.000833 + 0 + 0.000002 + 0.000002).
SET credits.clock = '2026-01-04 11:00+00';
SELECT pg_temp.deduct();
SELECT current_balance FROM balance_overview WHERE project_id = 5004;

--
-- Billing hours are UTC hours whatever the session's time zone (India is UTC+05:30).
--
SET TimeZone = 'Asia/Kolkata';
SET credits.clock = '2026-01-05 09:00+00';
SELECT pg_temp.funded(5005, '20.00');
SET credits.clock = '2026-01-05 23:30+00';
SELECT start_instance(5005, 'gpu-1', '6.00');
SET credits.clock = '2026-01-06 01:15+00';
SELECT stop_instance(5005, 'gpu-1');
SELECT usage_hour, usage_hour AT TIME ZONE 'UTC' AS utc_hour, amount
  FROM transactions WHERE project_id = 5005 AND type = 'usage' ORDER BY usage_hour;
SELECT date, description, amount, status FROM transaction_history WHERE project_id = 5005;
SET TimeZone = 'UTC';
SET credits.clock = '2026-01-06 02:00+00';
SELECT pg_temp.deduct();

--
-- Bad calls: an SQLSTATE and a clear message, and nothing written.
--
SET credits.clock = '2026-01-07 09:00+00';
SELECT pg_temp.funded(5006, '20.00');
SELECT open_account(5007);            -- an account without any money
SELECT attach_volume(5006, 'vol-1', '0.10');
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.fails(stmt) AS result, stmt
  FROM unnest(ARRAY[
    $$SELECT credits.start_instance(5999, 'gpu-1', '1.00')$$,             -- unknown project
    $$SELECT credits.start_instance(NULL, 'gpu-1', '1.00')$$,
    $$SELECT credits.start_instance(5006, NULL, '1.00')$$,
    $$SELECT credits.start_instance(5006, '', '1.00')$$,
    $$SELECT credits.start_instance(5006, repeat('x', 201), '1.00')$$,
    $$SELECT credits.start_instance(5006, 'gpu-1', NULL)$$,
    $$SELECT credits.start_instance(5006, 'gpu-1', '0')$$,
    $$SELECT credits.start_instance(5006, 'gpu-1', '-1.00')$$,
    $$SELECT credits.start_instance(5006, 'vol-1', '1.00')$$,             -- a volume
    $$SELECT credits.start_instance(5007, 'gpu-1', '1.00')$$,             -- no available balance
    $$SELECT credits.stop_instance(5006, 'gpu-404')$$,                    -- unknown resource
    $$SELECT credits.stop_instance(5006, 'vol-1')$$,                      -- a volume
    $$SELECT credits.stop_instance(5999, 'gpu-1')$$,
    $$SELECT credits.stop_instance(5006, NULL)$$,
    $$SELECT credits.stop_instance(5006, '')$$,
    $$SELECT credits.stop_instance(5006, repeat('x', 201))$$]) AS stmt;
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
-- 1 and 200 characters are fine.
SELECT start_instance(5006, 'x', '1.00'), start_instance(5006, repeat('y', 200), '1.00');
SELECT length(resource_id), kind, state FROM resource_overview WHERE project_id = 5006 ORDER BY 1;

-- Clean up: stop what runs, deduct, and every invariant holds.
SET credits.clock = '2026-01-07 10:00+00';
SELECT stop_instance(5006, 'x'), stop_instance(5006, repeat('y', 200)), delete_volume(5006, 'vol-1');
SELECT pg_temp.deduct();
SELECT project_id, current_balance, accumulating FROM balance_overview
 WHERE project_id BETWEEN 5001 AND 5029 ORDER BY project_id;
SELECT * FROM verify();
