\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/metering_helpers.sql
\set ECHO all
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
-- Runaway usage: one project records more API usage in an hour than the credits type holds
-- (9223372036854.775807; for example a client sending micro-credits as credits, at the
-- largest amount a call may carry).  Billing and zero-balance enforcement must go on for
-- every other project, and the runaway one must be cut off at zero like any other.  An hour's
-- charge, and a total of accrued usage, are clamped to the type's largest value: no balance
-- holds more, so what is collected is exact; the accrued units stay exact.
-- Projects 5600-5609, June 2026.

SET credits.clock = '2026-06-01 09:00+00';
SELECT pg_temp.funded(5601, '100.00'), pg_temp.funded(5602, '100.00');
SELECT start_instance(5601, 'gpu-1', '1.00'), start_instance(5602, 'gpu-1', '2.00');

-- 10:05: project 5601 records 10,000 calls of 1,000,000,000.00 each on each of two products:
-- 1e13 credits each, past the type's range, in batches of a thousand.
SET credits.clock = '2026-06-01 10:05+00';
SELECT sum(record_usage_batch(array_fill(5601::bigint, ARRAY[1000]), array_fill(product, ARRAY[1000]),
                              array_fill('1000000000.00'::credits, ARRAY[1000]))) AS taken
  FROM unnest(ARRAY['api:chat', 'api:embed']) AS product, generate_series(1, 10);
-- Reading it works, for that project and for all: its accrued usage shows as the largest
-- amount, nothing is available.
SELECT project_id, current_balance, accumulating, available_balance FROM balance_overview
 WHERE project_id IN (5601, 5602) ORDER BY project_id;
SELECT count(*) AS overview_rows FROM balance_overview WHERE project_id BETWEEN 5600 AND 5609;

-- 10:06: the minute's balance checks fold the usage and cut off 5601 only.
SET credits.clock = '2026-06-01 10:06+00';
SELECT run_balance_checks() >= 1 AS acted;
SELECT project_id, balance, depleted FROM accounts WHERE project_id IN (5601, 5602) ORDER BY project_id;
SELECT project_id, resource_id, state FROM resource_overview WHERE project_id IN (5601, 5602) ORDER BY project_id;
SELECT resource_id, usage_hour, status, amount, accrued_units FROM transactions
 WHERE project_id = 5601 AND type = 'usage' ORDER BY resource_id;
SELECT resource_id, usage_hour, credits._accrued_amount(units) AS amount, units FROM credits.usage_rollup
 WHERE project_id = 5601 ORDER BY resource_id;
-- More usage on top of a clamped hour: still clamped, the units still exact.
SELECT record_usage(5601, 'api:chat', '1000000000.00');
SET credits.clock = '2026-06-01 10:07+00';
SELECT run_balance_checks();
SELECT credits._accrued_amount(units) AS amount, units FROM credits.usage_rollup
 WHERE project_id = 5601 AND resource_id = 'api:chat';

-- 11:00: the hourly run completes every project's hours, oldest first.  5601 pays 1.00 for
-- hour 9; in hour 10 the instance's 0.10, booked at the cut-off, comes first, then the API
-- usage, booked at the hour's end in product order: api:chat takes the remaining 98.90 and
-- the balance lands on zero, the rest uncollected.  5602 pays 2.00 for
-- each of hours 9 and 10.  (This file leaves 5601's rows in place: the test files after it
-- run the periodic work over every project, with them.)
SET credits.clock = '2026-06-01 11:00:05+00';
SELECT pg_temp.deduct(5600, 5609);
SELECT project_id, balance, depleted FROM accounts WHERE project_id IN (5601, 5602) ORDER BY project_id;
SELECT project_id, resource_id, usage_hour, status, amount, uncollected FROM transactions
 WHERE project_id IN (5601, 5602) AND type = 'usage' ORDER BY project_id, usage_hour, resource_id;
SELECT project_id, type, amount, status, uncollected FROM transaction_history
 WHERE project_id = 5601 ORDER BY date, transaction_id;
-- The burn rate counts the last hour's API usage: past the largest amount, so no time is left.
SELECT project_id, accumulating, available_balance, burn_rate, hours_remaining FROM balance_overview
 WHERE project_id IN (5601, 5602) ORDER BY project_id;
SELECT * FROM verify(5601);
SELECT * FROM verify(5602);
