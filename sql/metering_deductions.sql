\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/metering_helpers.sql
\set ECHO all
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
-- run_hourly_deductions: completes every ended, undeducted usage hour oldest first, exactly
-- once, catching up after gaps; the balancing deduction takes what is left and records the
-- rest as uncollected.  Projects 5300-5329, April 2026.
--
-- Running twice charges once; a run in the middle of an hour completes only the ended hours
-- and books running resources up to the last hour boundary.
--
SET credits.clock = '2026-04-01 09:00+00';
SELECT pg_temp.funded(5301, '100.00');
SET credits.clock = '2026-04-01 10:30+00';
SELECT start_instance(5301, 'gpu-1', '2.00');
SELECT record_usage(5301, 'api:chat', '0.40');
SET credits.clock = '2026-04-01 11:30+00';
SELECT record_usage(5301, 'api:chat', '0.10');
SET credits.clock = '2026-04-01 12:00+00';
SELECT pg_temp.deduct();
SELECT pg_temp.deduct();
SELECT run_hourly_deductions() AS second_run_returns;
SELECT * FROM pg_temp.usage(5301);
SELECT pg_temp.totals(5301);
SET credits.clock = '2026-04-01 12:40+00';
SELECT pg_temp.deduct();
-- the resource's time is booked up to the project's last deducted hour
SELECT r.resource_id, greatest(r.accrued_until, a.deducted_until) AS booked_until
  FROM resources r JOIN accounts a USING (project_id) WHERE project_id = 5301;
SELECT * FROM pg_temp.usage(5301) WHERE date >= '2026-04-01 12:00+00';
SELECT pg_temp.totals(5301);

--
-- A 5-hour gap (the server was down, or pg_cron missed its runs): the next run catches up,
-- every hour once, oldest first.
--
SET credits.clock = '2026-04-01 13:10+00';
SELECT record_usage(5301, 'api:chat', '0.01');
SET credits.clock = '2026-04-01 15:20+00';
SELECT record_usage(5301, 'api:chat', '0.02');
SET credits.clock = '2026-04-01 17:59:59+00';
SELECT current_balance, accumulating, available_balance FROM balance_overview WHERE project_id = 5301;
SELECT count(*) AS hours_shown_accumulating FROM transaction_history
 WHERE project_id = 5301 AND status = 'accumulating';
SET credits.clock = '2026-04-01 18:00:07+00';
SELECT pg_temp.deduct();
SELECT pg_temp.deduct();
SELECT * FROM pg_temp.usage(5301) WHERE date >= '2026-04-01 12:00+00';
SELECT resource_id, usage_hour, count(*) FROM transactions WHERE project_id = 5301 AND type = 'usage'
 GROUP BY resource_id, usage_hour HAVING count(*) > 1;
SELECT pg_temp.totals(5301);
SELECT stop_instance(5301, 'gpu-1');
SET credits.clock = '2026-04-01 19:00+00';
SELECT pg_temp.deduct();
SELECT pg_temp.totals(5301);
SELECT * FROM verify(5301);

--
-- The balancing deduction: 5.00 left, three hours of 3.00.  Hour 10 takes 3.00, hour 11 takes
-- the last 2.00 (1.00 uncollected) and the balance lands exactly on zero; hour 12 is wholly
-- uncollected.  The balance never goes below zero.
--
SET credits.clock = '2026-04-02 09:00+00';
SELECT pg_temp.funded(5302, '5.00');
SET credits.clock = '2026-04-02 10:00+00';
SELECT start_instance(5302, 'gpu-1', '3.00');
SET credits.clock = '2026-04-02 13:00+00';
SELECT pg_temp.deduct();
SELECT * FROM pg_temp.usage(5302);
SELECT pg_temp.totals(5302);
SELECT date, type, amount, status, uncollected FROM transaction_history WHERE project_id = 5302;
SELECT current_balance, accumulating, available_balance, burn_rate, hours_remaining FROM balance_overview
 WHERE project_id = 5302;
-- Reaching zero cut the project off (see zero_balance for every effect).
SELECT resource_id, state, state_since FROM resource_overview WHERE project_id = 5302;
SELECT kind, resource_id FROM events WHERE project_id = 5302 AND kind <> 'charge_requested' ORDER BY event_id;
SELECT * FROM verify(5302);

-- Oldest first across resources too: the balance pays the earliest hours; within one hour the
-- order is the order the rows were written.  5.00 deposited; hours 10 and 11 of an instance
-- and an API product.
SET credits.clock = '2026-04-03 09:00+00';
SELECT pg_temp.funded(5303, '5.00');
SET credits.clock = '2026-04-03 10:00+00';
SELECT start_instance(5303, 'gpu-a', '1.00');
SET credits.clock = '2026-04-03 10:30+00';
SELECT record_usage(5303, 'api:chat', '1.00');
SET credits.clock = '2026-04-03 11:00+00';
SELECT pg_temp.deduct();           -- 10:00: 1.00 + 1.00
SELECT pg_temp.totals(5303);
SET credits.clock = '2026-04-03 11:15+00';
SELECT record_usage(5303, 'api:chat', '2.50');
SET credits.clock = '2026-04-03 12:00+00';
SELECT pg_temp.deduct();           -- 11:00: api 2.50 (written first, at the fold) then gpu-a 1.00
SELECT * FROM pg_temp.usage(5303);
SELECT pg_temp.totals(5303);

-- A project at zero whose API keeps being called: the usage is recorded and deducted, wholly
-- uncollected; no debt, the balance stays at zero.
SET credits.clock = '2026-04-03 12:30+00';
SELECT record_usage(5303, 'api:chat', '0.75');
SET credits.clock = '2026-04-03 13:00+00';
SELECT pg_temp.deduct();
SELECT * FROM pg_temp.usage(5303) WHERE date = '2026-04-03 12:00+00';
SELECT pg_temp.totals(5303);
SELECT count(*) AS balance_depleted_events FROM events WHERE project_id = 5303 AND kind = 'balance_depleted';

--
-- The database itself refuses a negative balance, whatever the code does.
--
SELECT pg_temp.fails($$UPDATE credits.accounts SET balance = '-0.000001' WHERE project_id = 5303$$);
SELECT pg_temp.fails($$UPDATE credits.transactions SET amount = '-1.00'
                        WHERE project_id = 5303 AND type = 'usage' AND status = 'completed'$$) ~ '^55000' AS completed_usage_is_immutable;

-- Nothing left to do.
SET credits.clock = '2026-04-03 14:00+00';
SELECT pg_temp.deduct();
SELECT project_id, current_balance, accumulating FROM balance_overview
 WHERE project_id BETWEEN 5300 AND 5329 ORDER BY project_id;
SELECT * FROM verify();

--
-- One project's completed usage is read over its deducted hours, [deducted_from,
-- deducted_until), which each run widens to take in the hours it completes.  A call from an
-- hour older than any deducted (its transaction began before the project's first deduction
-- and committed after it) is booked in its own hour and deducted by the next run: the
-- deducted hours then begin at that hour, and the history shows it.
--
SET credits.clock = '2026-04-04 09:00+00';
SELECT pg_temp.funded(5304, '50.00');
SET credits.clock = '2026-04-04 10:30+00';
SELECT start_instance(5304, 'gpu-1', '1.00');
SELECT deducted_from, deducted_until FROM credits.accounts WHERE project_id = 5304;
SET credits.clock = '2026-04-04 12:00+00';
SELECT pg_temp.deduct(5304, 5304);
SELECT deducted_from, deducted_until FROM credits.accounts WHERE project_id = 5304;
-- (the late call, at the time its transaction's start would have given it)
SET credits.clock = '2026-04-04 09:59:59+00';
SELECT record_usage(5304, 'api:chat', '0.30');
SET credits.clock = '2026-04-04 13:00+00';
SELECT pg_temp.deduct(5304, 5304);
SELECT deducted_from, deducted_until FROM credits.accounts WHERE project_id = 5304;
SELECT * FROM pg_temp.usage(5304);
SELECT pg_temp.totals(5304);
SELECT * FROM verify(5304);

--
-- An API product may carry the id of an instance (they share the project's namespace): its
-- usage is part of that resource's hour, one usage transaction, whether the instance ran the
-- whole hour (a new hour, written by the run) or was stopped in it (a booked hour, completed
-- in place).
--
SET credits.clock = '2026-04-05 09:00+00';
SELECT pg_temp.funded(5305, '50.00');
SELECT start_instance(5305, 'gpu-1', '1.00'), start_instance(5305, 'gpu-2', '2.00');
SET credits.clock = '2026-04-05 10:20+00';
SELECT stop_instance(5305, 'gpu-2');
SELECT record_usage(5305, 'gpu-1', '0.30'), record_usage(5305, 'gpu-2', '0.40');
SET credits.clock = '2026-04-05 10:30+00';
SELECT run_balance_checks() >= 0 AS ran;
SELECT resource_id, usage_hour, credits._accrued_amount(units) AS rolled_up FROM credits.usage_rollup
 WHERE project_id = 5305 ORDER BY resource_id, usage_hour;
SET credits.clock = '2026-04-05 11:00+00';
SELECT pg_temp.deduct(5305, 5305);
-- hour 9: 1.00 and 2.00 of running; hour 10: gpu-1 1.00 + 0.30, gpu-2 0.666667 (20 minutes at
-- 2.00) + 0.40
SELECT * FROM pg_temp.usage(5305);
SELECT pg_temp.totals(5305);
SELECT count(*) AS rolled_up_left FROM credits.usage_rollup WHERE project_id = 5305;
SELECT * FROM verify(5305);

--
-- The history adds up to the balance: a usage hour's amount is what it took from the balance,
-- its uncollected the rest of its charge (-amount + uncollected).  A balance of 5.00 and an
-- hour charged 8.20: the hour takes -5.00, 3.20 is uncollected, the balance is 0.00.  While
-- the hour runs it shows what it would take if it were deducted now (no balance check runs
-- here, so nothing cuts it off before the hour ends).
--
SET credits.clock = '2026-04-06 09:00+00';
SELECT pg_temp.funded(5306, '5.00');
SELECT start_instance(5306, 'gpu-1', '8.20');
SET credits.clock = '2026-04-06 09:30+00';
-- 4.10 accrued: all of it would be taken
SELECT * FROM pg_temp.usage(5306);
SET credits.clock = '2026-04-06 09:50+00';
-- 6.833333 accrued: 5.00 would be taken, the rest is uncollected so far; the amounts of the
-- history, accumulating ones included, add up to the available balance
SELECT * FROM pg_temp.usage(5306);
SELECT sum(amount) AS history_sum FROM transaction_history WHERE project_id = 5306;
SELECT current_balance, accumulating, available_balance FROM balance_overview WHERE project_id = 5306;
SET credits.clock = '2026-04-06 10:00+00';
SELECT pg_temp.deduct(5306, 5306);
SELECT * FROM pg_temp.usage(5306);
SELECT pg_temp.totals(5306);
-- A project never funded whose API hour is deducted: it takes 0.00, all of it uncollected.
SELECT open_account(5307);
SELECT record_usage(5307, 'api:chat', '0.004405');
SET credits.clock = '2026-04-06 11:00+00';
SELECT pg_temp.deduct(5307, 5307);
SELECT * FROM pg_temp.usage(5307);
-- the completed amounts of each project's history are its balance
SELECT a.project_id, a.balance,
       (SELECT sum(h.amount) FROM transaction_history h
         WHERE h.project_id = a.project_id AND h.status = 'completed') AS history_sum
  FROM credits.accounts a WHERE a.project_id IN (5306, 5307) ORDER BY a.project_id;
SELECT * FROM verify(5306) UNION ALL SELECT * FROM verify(5307);
