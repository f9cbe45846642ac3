\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/metering_helpers.sql
\set ECHO all
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
-- API usage: record_usage and record_usage_batch append to usage_events; the periodic runs
-- fold the events into one usage transaction per (project, resource, hour).
-- Projects 5200-5229, March 2026.

-- What the per-request path has written for project p, not yet folded.
CREATE FUNCTION pg_temp.pending(p bigint) RETURNS text LANGUAGE sql AS $$
    SELECT format('events=%s (%s) keys=%s',
                  (SELECT count(*) FROM credits.usage_events e WHERE e.project_id = p),
                  (SELECT coalesce(sum(e.amount), '0') FROM credits.usage_events e WHERE e.project_id = p),
                  (SELECT count(*) FROM credits.usage_keys k WHERE k.project_id = p));
$$;

--
-- The billing hour of a time is its UTC hour, whatever the session's time zone (Kolkata is
-- 5:30 ahead, Chatham 13:45 in March, its summer): before and after 2000-01-01 (where
-- timestamps count from), at and just before an hour boundary; infinities stay as they are.
--
SET TimeZone = 'Asia/Kolkata';
SELECT t AS ts, credits.hour_of(t) AT TIME ZONE 'UTC' AS utc_hour
  FROM unnest(ARRAY['2026-03-01 10:59:59.999999+00', '2026-03-01 11:00+00', '2026-03-01 11:00:00.000001+00',
                    '1999-12-31 23:59:59.999999+00', '1999-12-31 23:00+00', '1970-01-01 00:30+00',
                    '2000-01-01 00:00+00', 'infinity', '-infinity']::timestamptz[]) AS t;
SET TimeZone = 'Pacific/Chatham';
SELECT '2026-03-01 10:20+00'::timestamptz AS local_time,
       credits.hour_of('2026-03-01 10:20+00') AT TIME ZONE 'UTC' AS utc_hour;
SET TimeZone = 'UTC';

--
-- record_usage: one appended row per call; a repeated key with the same arguments counts once.
--
SET credits.clock = '2026-03-01 09:00+00';
SELECT pg_temp.funded(5201, '10.00'), pg_temp.funded(5202, '10.00');
SET credits.clock = '2026-03-01 10:05+00';
SELECT record_usage(5201, 'api:chat', '0.0042');
SELECT record_usage(5201, 'api:chat', '0.0042', 'req-1');
SELECT record_usage(5201, 'api:chat', '0.0042', 'req-1');           -- a retry: counted once
SELECT record_usage(5201, 'api:chat', '0.0042', idempotency_key => 'req-2');
SELECT record_usage(5201, 'api:embed', '0.000001');
SELECT pg_temp.pending(5201);
-- Keys are per project: the same key on another project is another call.
SELECT record_usage(5202, 'api:chat', '0.0042', 'req-1');
SELECT pg_temp.pending(5202);

-- Before folding: the usage shows as accumulating rows with no transaction id, and counts in
-- the overview.
SELECT * FROM pg_temp.usage(5201);
SELECT count(*) AS stored_usage_rows FROM transactions WHERE project_id = 5201 AND type = 'usage';
SELECT current_balance, accumulating, available_balance, burn_rate FROM balance_overview WHERE project_id = 5201;

--
-- Bad calls: SQLSTATE and message, and nothing written.
--
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.fails(stmt) AS result, stmt
  FROM unnest(ARRAY[
    $$SELECT credits.record_usage(5201, 'api:chat', '0.005', 'req-1')$$,          -- other amount
    $$SELECT credits.record_usage(5201, 'api:embed', '0.0042', 'req-1')$$,        -- other resource
    $$SELECT credits.record_usage(5999, 'api:chat', '0.0042')$$,                  -- unknown project
    $$SELECT credits.record_usage(NULL, 'api:chat', '0.0042')$$,
    $$SELECT credits.record_usage(5201, NULL, '0.0042')$$,
    $$SELECT credits.record_usage(5201, '', '0.0042')$$,
    $$SELECT credits.record_usage(5201, repeat('a', 201), '0.0042')$$,
    $$SELECT credits.record_usage(5201, 'api:chat', NULL)$$,
    $$SELECT credits.record_usage(5201, 'api:chat', '0')$$,
    $$SELECT credits.record_usage(5201, 'api:chat', '-0.0042')$$,
    $$SELECT credits.record_usage(5201, 'api:chat', '0.0042', '')$$,
    $$SELECT credits.record_usage(5201, 'api:chat', '0.0042', repeat('k', 201))$$]) AS stmt;
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
-- 1 and 200 characters are fine.
SELECT record_usage(5201, 'a', '0.01', repeat('k', 200)), record_usage(5201, repeat('a', 200), '0.01', 'k');
SELECT pg_temp.pending(5201);

--
-- The plain call (no key, arguments in range, a known project) is appended in C without
-- plpgsql (src/usage_record.c); every other call goes to credits._record_usage, whose calls
-- track_functions counts.  Undone at the end.
--
BEGIN;
SET LOCAL track_functions = 'all';
SELECT pg_temp.funded(5220, '10.00');
SELECT record_usage(5220, 'api:chat', '0.01') FROM generate_series(1, 3);    -- one statement
-- 200 characters in 400 bytes; the ceiling; the smallest amount
SELECT record_usage(5220, repeat('é', 200), '1000000000'), record_usage(5220, 'api:chat', '0.000001');
SELECT count(*) AS plpgsql_calls FROM pg_stat_xact_user_functions WHERE funcname = '_record_usage';
-- An account opened in the same statement is not in the statement's snapshot: the call goes
-- to the plpgsql path, which takes a snapshot of its own, and is recorded all the same.
SELECT open_account(5221), record_usage(5221, 'api:chat', '0.01');
SELECT pg_temp.pending(5221);
SELECT calls AS plpgsql_calls FROM pg_stat_xact_user_functions WHERE funcname = '_record_usage';
SELECT record_usage(5220, 'api:chat', '0.01', 'k-1');                         -- a key: plpgsql
SELECT calls AS plpgsql_calls FROM pg_stat_xact_user_functions WHERE funcname = '_record_usage';
-- A trigger added to usage_events by hand fires: the plain call takes the plpgsql path too.
CREATE FUNCTION pg_temp.noticed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'usage_events row of project % for %', NEW.project_id, NEW.amount;
    RETURN NEW;
END $$;
CREATE TRIGGER noticed BEFORE INSERT ON credits.usage_events FOR EACH ROW EXECUTE FUNCTION pg_temp.noticed();
SELECT record_usage(5220, 'api:chat', '0.02');
SELECT calls AS plpgsql_calls FROM pg_stat_xact_user_functions WHERE funcname = '_record_usage';
-- past the bounds by one: refused (by credits._record_usage)
SELECT pg_temp.fails(stmt) AS result
  FROM unnest(ARRAY[$$SELECT credits.record_usage(5220, repeat('é', 201), '0.01')$$,
                    $$SELECT credits.record_usage(5220, 'api:chat', '1000000000.000001')$$]) AS stmt;
SELECT length(resource_id) AS chars, usage_hour, amount FROM credits.usage_events
 WHERE project_id = 5220 ORDER BY amount;
SELECT pg_temp.pending(5220);
ROLLBACK;
-- A read-only transaction writes nothing: refused first, whatever the arguments.
SELECT pg_temp.ledger_state() AS before \gset
BEGIN READ ONLY;
SELECT pg_temp.fails(stmt) AS result
  FROM unnest(ARRAY[$$SELECT credits.record_usage(5201, 'api:chat', '0.01')$$,
                    $$SELECT credits.record_usage(5201, 'api:chat', '0.01', 'ro-1')$$,
                    $$SELECT credits.record_usage(5201, 'api:chat', '-1')$$]) AS stmt;
ROLLBACK;
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;

--
-- Folding: the balance check folds the events into the hour's roll-up rows (usage_rollup, one
-- per project, product and hour); usage recorded later in the same hour adds to them.  No
-- usage transaction is written while the hour runs: the history shows the hour accumulating,
-- not stored yet.  The hour boundary is exact.
--
SET credits.clock = '2026-03-01 10:30+00';
SELECT run_balance_checks() >= 0 AS ran;
SELECT pg_temp.pending(5201);
SELECT left(resource_id, 20) AS resource_id, usage_hour, credits._accrued_amount(units) AS amount
  FROM credits.usage_rollup WHERE project_id = 5201 ORDER BY resource_id;
SELECT count(*) AS stored_usage_rows FROM transactions WHERE project_id = 5201 AND type = 'usage';
SELECT left(description, 20) AS description, amount, status, transaction_id IS NOT NULL AS stored
  FROM transaction_history WHERE project_id = 5201 AND type = 'usage' ORDER BY description;
-- The next minute's fold adds to the rows in place: heap-only updates, no new index entry.
BEGIN;
SELECT record_usage(5201, 'api:chat', '0.01'), record_usage(5201, 'api:embed', '0.01');
SELECT run_balance_checks() >= 0 AS ran;
SELECT n_tup_upd >= 2 AS updated, n_tup_hot_upd = n_tup_upd AS all_heap_only
  FROM pg_stat_xact_user_tables WHERE relid = 'credits.usage_rollup'::regclass;
ROLLBACK;
SET credits.clock = '2026-03-01 10:59:59.999999+00';
SELECT record_usage(5201, 'api:chat', '1.00');
SET credits.clock = '2026-03-01 11:00:00+00';
SELECT record_usage(5201, 'api:chat', '2.00');
-- The rolled-up 10:00 usage and the unfolded event show as one row; neither hour is stored.
SELECT stored, date, description, amount, status FROM pg_temp.usage(5201) WHERE description = 'API usage api:chat';
SELECT current_balance, accumulating, available_balance FROM balance_overview WHERE project_id = 5201;

-- 12:00: the deduction folds the last events and writes hours 10 and 11 from the roll-up,
-- completed.
SET credits.clock = '2026-03-01 12:00+00';
SELECT pg_temp.deduct();
SELECT pg_temp.pending(5201);
SELECT * FROM pg_temp.usage(5201);
SELECT current_balance, accumulating, available_balance, burn_rate FROM balance_overview WHERE project_id = 5201;

-- A call that began before the deduction and commits after it (its hour is already deducted)
-- is not lost: the next fold rolls it up in the current hour, and no completed hour changes.
SET credits.clock = '2026-03-01 11:59:59+00';
SELECT record_usage(5201, 'api:chat', '0.50');
-- Until it is folded it shows in the current hour, not as a second row of the deducted hour.
SET credits.clock = '2026-03-01 12:00:10+00';
SELECT * FROM pg_temp.usage(5201) WHERE description = 'API usage api:chat';
-- A call of the current hour folded with it: one roll-up row of 0.50 + 0.25.
SET credits.clock = '2026-03-01 12:00:20+00';
SELECT record_usage(5201, 'api:chat', '0.25');
SET credits.clock = '2026-03-01 12:00:30+00';
SELECT run_balance_checks() >= 0 AS ran;
SELECT usage_hour, amount, status FROM transactions
 WHERE project_id = 5201 AND resource_id = 'api:chat' ORDER BY usage_hour;
SELECT usage_hour, credits._accrued_amount(units) AS rolled_up FROM credits.usage_rollup
 WHERE project_id = 5201 AND resource_id = 'api:chat';
SET credits.clock = '2026-03-01 13:00+00';
SELECT pg_temp.deduct();
SELECT current_balance FROM balance_overview WHERE project_id = 5201;

--
-- record_usage_batch: element i is one record_usage call; all or nothing.
--
SET credits.clock = '2026-03-01 13:10+00';
SELECT pg_temp.funded(5203, '10.00');
SELECT record_usage_batch(ARRAY[5203, 5203, 5203, 5203, 5203, 5202],
                          ARRAY['api:chat', 'api:chat', 'api:chat', 'api:embed', 'api:chat', 'api:chat'],
                          ARRAY['0.10', '0.20', '0.10', '0.01', '0.30', '0.05']::credits[],
                          ARRAY['b-1', 'b-2', 'b-1', NULL, 'b-3', 'b-1']) AS taken;
SELECT pg_temp.pending(5203), pg_temp.pending(5202);
-- The same batch again: only the unkeyed element is new.
SELECT record_usage_batch(ARRAY[5203, 5203, 5203, 5203, 5203, 5202],
                          ARRAY['api:chat', 'api:chat', 'api:chat', 'api:embed', 'api:chat', 'api:chat'],
                          ARRAY['0.10', '0.20', '0.10', '0.01', '0.30', '0.05']::credits[],
                          ARRAY['b-1', 'b-2', 'b-1', NULL, 'b-3', 'b-1']) AS taken;
SELECT pg_temp.pending(5203);
-- A key taken by record_usage is taken for the batch too, and the other way round.
SELECT record_usage(5203, 'api:chat', '0.40', 'b-4');
SELECT record_usage_batch(ARRAY[5203]::bigint[], ARRAY['api:chat'], ARRAY['0.40']::credits[], ARRAY['b-4']) AS taken;
SELECT record_usage(5203, 'api:chat', '0.10', 'b-1');
SELECT pg_temp.pending(5203);
-- Without keys, and empty.
SELECT record_usage_batch(ARRAY[5203, 5203]::bigint[], ARRAY['api:a', 'api:b'], ARRAY['0.01', '0.02']::credits[]) AS taken;
SELECT record_usage_batch('{}'::bigint[], '{}'::text[], '{}'::credits[]) AS taken;
SELECT pg_temp.pending(5203);
SELECT * FROM pg_temp.usage(5203);

-- A batch appends one event per project and product, at most 1,000 elements to an event: 2,500
-- calls of 0.000003 on one product and one call on another are 4 events worth 0.007503.
SELECT pg_temp.funded(5204, '10.00');
SELECT record_usage_batch(array_fill(5204::bigint, ARRAY[2501]),
                          array_fill('api:many'::text, ARRAY[2500]) || 'api:one'::text,
                          array_fill('0.000003'::credits, ARRAY[2501])) AS taken;
SELECT pg_temp.pending(5204);
SELECT resource_id, count(*) AS events, sum(amount) FROM credits.usage_events WHERE project_id = 5204
 GROUP BY resource_id ORDER BY resource_id;

-- Bad batches: refused whole, nothing written.
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.fails(stmt) AS result, stmt
  FROM unnest(ARRAY[
    $$SELECT credits.record_usage_batch(ARRAY[5203, 5203, 5203], ARRAY['api:x', 'api:x', 'api:x'], ARRAY['0.1', '0.1', '0']::credits.credits[])$$,
    $$SELECT credits.record_usage_batch(ARRAY[5203, 5203, 5203], ARRAY['api:x', 'api:x', 'api:x'], ARRAY['0.1', '-0.1', '0.1']::credits.credits[])$$,
    $$SELECT credits.record_usage_batch(ARRAY[5203, 5203], ARRAY['api:x', 'api:x'], ARRAY['0.1', NULL]::credits.credits[])$$,
    $$SELECT credits.record_usage_batch(ARRAY[5203, NULL], ARRAY['api:x', 'api:x'], ARRAY['0.1', '0.1']::credits.credits[])$$,
    $$SELECT credits.record_usage_batch(ARRAY[5203, 5203], ARRAY['api:x', NULL], ARRAY['0.1', '0.1']::credits.credits[])$$,
    $$SELECT credits.record_usage_batch(ARRAY[5203, 5203], ARRAY['api:x', ''], ARRAY['0.1', '0.1']::credits.credits[])$$,
    $$SELECT credits.record_usage_batch(ARRAY[5203, 5203], ARRAY['api:x', repeat('a', 201)], ARRAY['0.1', '0.1']::credits.credits[])$$,
    $$SELECT credits.record_usage_batch(ARRAY[5203, 5203], ARRAY['api:x', 'api:x'], ARRAY['0.1', '0.1']::credits.credits[], ARRAY['k-new', ''])$$,
    $$SELECT credits.record_usage_batch(ARRAY[5203, 5203], ARRAY['api:x', 'api:x'], ARRAY['0.1', '0.1']::credits.credits[], ARRAY['k-new', repeat('k', 201)])$$,
    $$SELECT credits.record_usage_batch(ARRAY[5203, 5999], ARRAY['api:x', 'api:x'], ARRAY['0.1', '0.1']::credits.credits[])$$,
    $$SELECT credits.record_usage_batch(ARRAY[5203, 5203], ARRAY['api:x'], ARRAY['0.1', '0.1']::credits.credits[])$$,
    $$SELECT credits.record_usage_batch(ARRAY[5203, 5203], ARRAY['api:x', 'api:x'], ARRAY['0.1']::credits.credits[])$$,
    $$SELECT credits.record_usage_batch(ARRAY[5203, 5203], ARRAY['api:x', 'api:x'], ARRAY['0.1', '0.1']::credits.credits[], ARRAY['k-new'])$$,
    $$SELECT credits.record_usage_batch(NULL, ARRAY['api:x'], ARRAY['0.1']::credits.credits[])$$,
    $$SELECT credits.record_usage_batch(ARRAY[5203], NULL, ARRAY['0.1']::credits.credits[])$$,
    $$SELECT credits.record_usage_batch(ARRAY[5203], ARRAY['api:x'], NULL)$$,
    -- a key used before with other arguments, after good elements
    $$SELECT credits.record_usage_batch(ARRAY[5203, 5203], ARRAY['api:x', 'api:chat'], ARRAY['0.1', '0.99']::credits.credits[], ARRAY['k-new', 'b-1'])$$,
    -- one key twice in the batch with other arguments
    $$SELECT credits.record_usage_batch(ARRAY[5203, 5203], ARRAY['api:x', 'api:x'], ARRAY['0.1', '0.2']::credits.credits[], ARRAY['k-new', 'k-new'])$$]) AS stmt;
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT count(*) AS key_k_new FROM usage_keys WHERE project_id = 5203 AND idempotency_key = 'k-new';

-- Clean up: fold and deduct everything.
SET credits.clock = '2026-03-01 14:00+00';
SELECT pg_temp.deduct();
SELECT pg_temp.pending(5201), pg_temp.pending(5202), pg_temp.pending(5203);
SELECT project_id, current_balance, accumulating FROM balance_overview
 WHERE project_id BETWEEN 5200 AND 5229 ORDER BY project_id;
SELECT * FROM verify();

--
-- One project's usage is read hour by hour (the usage index is ordered by hour first): in a
-- session whose time zone has daylight saving time, every hour is still found across the
-- switch (US clocks go forward at 2026-03-08 07:00 UTC).  In a transaction rolled back, so
-- the other files' projects are not deducted up to that day.
--
BEGIN;
SET LOCAL TimeZone = 'America/New_York';
SET LOCAL credits.clock = '2026-03-08 05:30+00';
SELECT pg_temp.funded(5210, '50.00');
SELECT start_instance(5210, 'gpu-dst', '1.00');
SET LOCAL credits.clock = '2026-03-08 09:00:05+00';
SELECT pg_temp.deduct(5210, 5210);
SELECT date, date AT TIME ZONE 'UTC' AS utc, amount, status FROM transaction_history
 WHERE project_id = 5210 AND type = 'usage' ORDER BY date;
SELECT count(*) AS stored_completed FROM transactions
 WHERE project_id = 5210 AND type = 'usage' AND status = 'completed';
SELECT * FROM verify(5210);
ROLLBACK;
