\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/metering_helpers.sql
\set ECHO all
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
-- Burn rate: the C aggregate credits.burn_rate(amount, per) and the burn_rate, hours_remaining
-- and runs_out_at columns of balance_overview.  Projects 5500-5529, June 2026.

--
-- The aggregate: each input is "amount every per", scaled to one hour exactly and rounded
-- half to even to the micro-credit, then summed.
--
SELECT amount, per, burn_rate(amount::credits, per::interval) AS per_hour
  FROM (VALUES ('3.00', '1 hour'), ('1.50', '30 minutes'), ('3.00', '2 hours'), ('24.00', '1 day'),
               ('0.001', '1 second'), ('1.00', '90 minutes'), ('2.00', '3 hours'),
               ('0.000001', '2 hours'),     -- 0.0000005: a tie, to even 0
               ('0.000003', '2 hours'),     -- 0.0000015: a tie, to even 0.000002
               ('0.000005', '2 hours'),     -- 0.0000025: a tie, to even 0.000002
               ('-0.000003', '2 hours'),    -- -0.0000015: to even -0.000002
               ('1.00', '1 day 1 hour'), ('1.00', '1 microsecond'), ('0', '1 hour')) AS v(amount, per)
 GROUP BY amount, per ORDER BY per::interval, amount;
-- Several inputs: each is rounded, then summed (3 x 1/3 per hour = 0.999999, not 1.00).
SELECT burn_rate(amount, per) FROM (VALUES ('1.00'::credits, '3 hours'::interval),
                                           ('1.00', '3 hours'), ('1.00', '3 hours')) AS v(amount, per);
SELECT burn_rate(r, '1 hour') AS rates, burn_rate(r, '1 hour') = sum(r) AS equals_sum
  FROM (VALUES ('2.40'::credits), ('1.20'), ('0.07')) AS v(r);
-- No rows is a rate of zero, not null; null inputs are skipped.
SELECT burn_rate(amount, per) AS no_rows FROM (SELECT '1.00'::credits, '1 hour'::interval WHERE false) AS v(amount, per);
SELECT burn_rate(amount, per) AS nulls_skipped
  FROM (VALUES ('1.00'::credits, '1 hour'::interval), (NULL, '1 hour'), ('1.00', NULL)) AS v(amount, per);
-- A period must be positive and month-free (a month has no fixed length).
SELECT per, pg_temp.fails(format('SELECT credits.burn_rate(''1.00'', %L::interval)', per)) AS result
  FROM unnest(ARRAY['0', '-1 hour', '1 month', '1 year', '1 mon -30 days', '1 day -24 hours',
                    '-1 day 25 hours']) AS per;
-- A rate past the credits range is the range's end, not an error: runaway usage of one project
-- must not make the overview of every project fail (metering_runaway).  Just inside the range
-- it is exact; scaled past it, or summed past it, it is clamped, in both directions.
SELECT credits.burn_rate('9223372036854.775807', '1 hour') AS largest,
       credits.burn_rate('-9223372036854.775807', '1 hour') AS smallest,
       credits.burn_rate('153722867280.912930', '1 minute') AS just_inside,
       credits.burn_rate('153722867280.912931', '1 minute') AS scaled_past,
       credits.burn_rate('-9000000000000.00', '1 minute') AS scaled_past_below;
SELECT credits.burn_rate(x, '1 hour') AS summed_past,
       credits.burn_rate(-x, '1 hour') AS summed_past_below,
       credits.burn_rate(x, '1 hour') FILTER (WHERE tag <> 'b') AS summed_to_the_end
  FROM (VALUES ('9000000000000.00'::credits.credits, 'a'), ('9000000000000.00', 'b'),
               ('223372036854.775807', 'c')) AS v(x, tag);

-- Parallel-safe, with a combine function, and a parallel plan gives the serial answer.
SELECT a.aggfnoid::regprocedure, a.aggcombinefn, p.proparallel
  FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid
 WHERE a.aggfnoid = 'credits.burn_rate(credits.credits, interval)'::regprocedure;
CREATE TABLE pg_temp.rates AS
SELECT (i % 1000 + 1) * '0.000007'::credits AS amount, (i % 7 + 1) * interval '13 minutes' AS per
  FROM generate_series(1, 200000) AS i;
ANALYZE pg_temp.rates;
SELECT burn_rate(amount, per) AS serial FROM pg_temp.rates \gset
BEGIN;
SET LOCAL parallel_setup_cost = 0;
SET LOCAL parallel_tuple_cost = 0;
SET LOCAL min_parallel_table_scan_size = 0;
SET LOCAL max_parallel_workers_per_gather = 2;
EXPLAIN (COSTS OFF) SELECT burn_rate(amount, per) FROM pg_temp.rates;
COMMIT;
-- (temporary tables are never scanned in parallel; a regular one is)
CREATE TABLE burn_rate_inputs AS SELECT * FROM pg_temp.rates;
ANALYZE burn_rate_inputs;
BEGIN;
SET LOCAL parallel_setup_cost = 0;
SET LOCAL parallel_tuple_cost = 0;
SET LOCAL min_parallel_table_scan_size = 0;
SET LOCAL max_parallel_workers_per_gather = 2;
EXPLAIN (COSTS OFF) SELECT burn_rate(amount, per) FROM burn_rate_inputs;
SELECT burn_rate(amount, per) = :'serial'::credits AS parallel_equals_serial, :'serial' AS serial
  FROM burn_rate_inputs;
COMMIT;
DROP TABLE burn_rate_inputs;

--
-- balance_overview of a mixed project: two running instances, a stopped one, an available
-- and a deleted volume, and API usage.  burn_rate = running instances + available volumes +
-- the API usage of the last ended hour (deducted or not); the current hour's API usage and
-- older hours do not count.
--
SET credits.clock = '2026-06-01 08:00+00';
SELECT pg_temp.funded(5501, '100.00');
SELECT start_instance(5501, 'gpu-a', '2.40'), start_instance(5501, 'gpu-b', '1.20'),
       start_instance(5501, 'gpu-c', '5.00'), attach_volume(5501, 'vol-1', '0.07'),
       attach_volume(5501, 'vol-2', '0.05');
SELECT record_usage(5501, 'api:chat', '9.99');                   -- hour 8: too old to count later
SET credits.clock = '2026-06-01 09:00+00';
SELECT stop_instance(5501, 'gpu-c'), delete_volume(5501, 'vol-2');
SET credits.clock = '2026-06-01 09:15+00';
SELECT record_usage(5501, 'api:chat', '0.30'), record_usage(5501, 'api:embed', '0.06');
-- 09:45: the last ended hour (8) had 9.99 of API usage: 2.40 + 1.20 + 0.07 + 9.99 = 13.66.
SET credits.clock = '2026-06-01 09:45+00';
SELECT current_balance, accumulating, available_balance, burn_rate, hours_remaining, runs_out_at
  FROM balance_overview WHERE project_id = 5501;
-- 10:20, not deducted yet: hour 9's API usage (0.36, still accumulating) counts, not hour 10's.
SET credits.clock = '2026-06-01 10:20+00';
SELECT record_usage(5501, 'api:chat', '5.00');
SELECT current_balance, accumulating, available_balance, burn_rate, hours_remaining, runs_out_at
  FROM balance_overview WHERE project_id = 5501;
SELECT _burn_rate_of(5501) AS burn_rate_of;
-- 10:30, after the deduction: the same 0.36, now completed.
SET credits.clock = '2026-06-01 10:30+00';
SELECT run_hourly_deductions() >= 0 AS ran;
SELECT current_balance, accumulating, available_balance, burn_rate, hours_remaining, runs_out_at
  FROM balance_overview WHERE project_id = 5501;
-- hours_remaining = available / burn rate, to 0.01 h; runs_out_at to the second.
SELECT o.hours_remaining = round(o.available_balance / o.burn_rate, 2) AS hours_ok,
       o.runs_out_at = date_trunc('second', timestamptz '2026-06-01 10:30+00'
                                  + (o.available_balance / o.burn_rate) * interval '1 hour') AS runs_out_ok
  FROM balance_overview o WHERE o.project_id = 5501;
-- 11:10: hour 10's API usage (5.00) is the last ended hour now.
SET credits.clock = '2026-06-01 11:10+00';
SELECT burn_rate FROM balance_overview WHERE project_id = 5501;
-- 12:10: no API usage in hour 11: only the resources.
SET credits.clock = '2026-06-01 12:10+00';
SELECT burn_rate FROM balance_overview WHERE project_id = 5501;
-- Nothing running: burn rate zero, no runway figures.
SELECT stop_instance(5501, 'gpu-a'), stop_instance(5501, 'gpu-b'), delete_volume(5501, 'vol-1');
SELECT current_balance, accumulating, available_balance, burn_rate, hours_remaining, runs_out_at
  FROM balance_overview WHERE project_id = 5501;
-- With nothing available the runway is zero and it runs out now.
SET credits.clock = '2026-06-01 13:00+00';
SELECT run_hourly_deductions() >= 0 AS ran;
SELECT pg_temp.funded(5502, '5.00');
SELECT start_instance(5502, 'gpu-1', '10.00');
SET credits.clock = '2026-06-01 13:30+00';
SELECT current_balance, accumulating, available_balance, burn_rate, hours_remaining, runs_out_at
  FROM balance_overview WHERE project_id = 5502;
SELECT stop_instance(5502, 'gpu-1');

-- The overview is readable without credits on the search_path (dashboards, credits_reader).
SET search_path = pg_catalog;
SELECT project_id, burn_rate, accumulating FROM credits.balance_overview WHERE project_id = 5501;
SET ROLE credits_reader;
SELECT project_id, current_balance FROM credits.balance_overview WHERE project_id = 5502;
RESET ROLE;
SET search_path = public, credits;

SET credits.clock = '2026-06-01 14:00+00';
SELECT run_hourly_deductions() >= 0 AS ran;
SELECT project_id, current_balance, accumulating FROM balance_overview
 WHERE project_id BETWEEN 5500 AND 5529 ORDER BY project_id;
SELECT * FROM verify();
