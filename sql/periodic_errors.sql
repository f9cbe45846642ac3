\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/metering_helpers.sql
\set ECHO all
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
-- One project's periodic work raising an error does not stop the others: the run skips it,
-- lists it in credits.billing_errors (one row while the error lasts) with one billing_error
-- event, bills every other project, and retries it at every later run; when a run bills it
-- again, its hours are caught up exactly once and the row goes.
-- Projects 5700-5709, July 2026.

SET credits.clock = '2026-07-01 09:00+00';
SELECT pg_temp.funded(p, '100.00') FROM generate_series(5701, 5703) AS p;
SELECT start_instance(p, 'gpu-1', '1.00') FROM generate_series(5701, 5703) AS p;
SELECT record_usage(5702, 'api:chat', '0.40');

-- A trigger added by hand makes every debit of project 5702's account fail.
CREATE FUNCTION pg_temp.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'project % is frozen by a test trigger', OLD.project_id USING ERRCODE = 'P0042';
END $$;
CREATE TRIGGER test_refuse_5702 BEFORE UPDATE ON credits.accounts FOR EACH ROW
    WHEN (OLD.project_id = 5702) EXECUTE FUNCTION pg_temp.refuse();

-- 10:00: the other projects are billed; 5702 is listed, with one event.
SET credits.clock = '2026-07-01 10:00:05+00';
SELECT pg_temp.deduct(5701, 5703);
SELECT project_id, balance, deducted_until FROM accounts WHERE project_id BETWEEN 5701 AND 5703 ORDER BY 1;
SELECT project_id, at, run, sqlstate, message FROM billing_errors;
SELECT project_id, kind, payload - 'at' AS payload FROM events WHERE kind = 'billing_error';
-- its rolled-up API usage waits, untouched, for the run that bills it
SELECT project_id, resource_id, usage_hour, credits._accrued_amount(units) AS amount FROM usage_rollup;

-- 11:00: still failing: still one row (its time updated) and one event; the others billed.
SET credits.clock = '2026-07-01 11:00:05+00';
SELECT pg_temp.deduct(5701, 5703);
SELECT project_id, at, run, sqlstate FROM billing_errors;
SELECT count(*) AS billing_error_events FROM events WHERE kind = 'billing_error';

-- The trigger is dropped: 12:00 bills 5702's three hours once, and the row goes.
DROP TRIGGER test_refuse_5702 ON credits.accounts;
SET credits.clock = '2026-07-01 12:00:05+00';
SELECT pg_temp.deduct(5701, 5703);
SELECT * FROM pg_temp.usage(5702);
SELECT project_id, balance, deducted_until FROM accounts WHERE project_id BETWEEN 5701 AND 5703 ORDER BY 1;
SELECT count(*) AS billing_errors FROM billing_errors;
SELECT count(*) AS billing_error_events FROM events WHERE kind = 'billing_error';
SELECT * FROM verify(5701) UNION ALL SELECT * FROM verify(5702) UNION ALL SELECT * FROM verify(5703);

--
-- The balance check: two projects whose accrued usage has used up their balance; cutting off
-- 5705 fails (a trigger on its cut-off), 5704 is cut off all the same.
--
SET credits.clock = '2026-07-02 09:00+00';
SELECT pg_temp.funded(p, '5.00') FROM generate_series(5704, 5705) AS p;
SELECT start_instance(p, 'gpu-1', '3.00') FROM generate_series(5704, 5705) AS p;
CREATE TRIGGER test_refuse_5705 BEFORE UPDATE OF depleted ON credits.accounts FOR EACH ROW
    WHEN (OLD.project_id = 5705 AND NEW.depleted) EXECUTE FUNCTION pg_temp.refuse();
SET credits.clock = '2026-07-02 10:50+00';
SELECT run_balance_checks() AS acted;
SELECT project_id, depleted FROM accounts WHERE project_id IN (5704, 5705) ORDER BY 1;
SELECT project_id, resource_id, state FROM resource_overview WHERE project_id IN (5704, 5705) ORDER BY 1;
SELECT project_id, at, run, sqlstate, message FROM billing_errors;
SELECT project_id, kind FROM events WHERE project_id IN (5704, 5705) AND kind <> 'charge_requested' ORDER BY event_id;
-- a minute later, still failing: one row, one event
SET credits.clock = '2026-07-02 10:51+00';
SELECT run_balance_checks() AS acted;
SELECT project_id, at, run FROM billing_errors;
SELECT count(*) AS billing_error_events FROM events WHERE kind = 'billing_error' AND project_id = 5705;
-- the trigger dropped, the next check cuts 5705 off and the row goes
DROP TRIGGER test_refuse_5705 ON credits.accounts;
SET credits.clock = '2026-07-02 10:52+00';
SELECT run_balance_checks() AS acted;
SELECT project_id, depleted FROM accounts WHERE project_id IN (5704, 5705) ORDER BY 1;
SELECT count(*) AS billing_errors FROM billing_errors;
SET credits.clock = '2026-07-02 11:00:05+00';
SELECT pg_temp.deduct(5704, 5705);
SELECT * FROM verify(5704) UNION ALL SELECT * FROM verify(5705);

-- Readers read the list.
SET ROLE credits_reader;
SELECT count(*) AS billing_errors FROM credits.billing_errors;
RESET ROLE;

--
-- Rows written without an INSERT statement fire no trigger (src/bulk_insert.h): a trigger
-- added by hand to INSERT on credits.transactions makes the deduction refuse (0A000) rather
-- than skip it; the project is listed until the trigger goes, then billed.
--
SET credits.clock = '2026-07-03 09:00+00';
SELECT pg_temp.funded(5706, '50.00');
SELECT start_instance(5706, 'gpu-1', '1.00');
CREATE FUNCTION pg_temp.pass() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER test_insert_trigger BEFORE INSERT ON credits.transactions FOR EACH ROW
    EXECUTE FUNCTION pg_temp.pass();
SET credits.clock = '2026-07-03 10:00:05+00';
SELECT pg_temp.deduct(5706, 5706);
SELECT project_id, run, sqlstate, message FROM billing_errors WHERE project_id = 5706;
DROP TRIGGER test_insert_trigger ON credits.transactions;
SET credits.clock = '2026-07-03 11:00:05+00';
SELECT pg_temp.deduct(5706, 5706);
SELECT count(*) AS billing_errors FROM billing_errors WHERE project_id = 5706;
SELECT * FROM verify(5706);
