-- The credits demo: one GPU-cloud project, from its first deposit to running out of credits
-- and back, as its owner sees it on the billing page.  test/demo.sh runs this file and then
-- every scene in test/demo/ in file-name order (NN_name.sql), in one psql session; a new
-- scene is a new file, numbered to fall where it belongs in the story (the summary, 99, comes
-- last).  Each scene prints its time and what happens, one line saying what it shows, and
-- then what the user would see.
--
-- Billing time is the story's, not the machine's: each scene sets credits.clock, later than
-- the scene before, and runs the reference payment worker at that time with
--   \! "$DEMO_DIR/demo/worker.sh" 2026-03-02T09:55:30Z
-- Amounts are shown to the cent (they are kept to the micro-credit).  What a scene can show,
-- defined below for project 42: the views billing_page, history and resources, and
-- pg_temp.attempt(statement), which says whether a call was refused and why.  A call whose
-- result says nothing to the reader ends with \g /dev/null.  Keep lines within 100 columns.
\set ON_ERROR_STOP on
\set QUIET on
\pset footer off
\pset null ''
SET search_path = "$user", public, credits;
SET lc_time = 'C';

-- What the billing page shows: the balance, the usage of the running hour not yet billed,
-- what is available, the burn rate and how long the balance lasts at that rate.
CREATE TEMP VIEW billing_page AS
SELECT round(current_balance::numeric, 2) AS balance,
       round(accumulating::numeric, 2) AS "this hour so far",
       round(available_balance::numeric, 2) AS available,
       round(burn_rate::numeric, 2) AS "burn rate /h",
       hours_remaining AS "hours left",
       to_char(runs_out_at, 'Mon DD HH24:MI') AS "runs out",
       CASE WHEN auto_recharge_enabled THEN 'on' ELSE 'off' END AS "auto-recharge"
  FROM credits.balance_overview WHERE project_id = 42;

-- The history as the billing page lists it, newest first; uncollected only where there is some.
CREATE TEMP VIEW history AS
SELECT to_char(date, 'Mon DD HH24:MI') AS date, type, description,
       regexp_replace(invoice_url, '^https://', '') AS invoice,
       round(amount::numeric, 2) AS amount, status,
       round(nullif(uncollected, '0')::numeric, 2) AS uncollected
  FROM credits.transaction_history WHERE project_id = 42;

-- The project's instances and volumes.
CREATE TEMP VIEW resources AS
SELECT resource_id AS resource, kind, state, round(rate_per_hour::numeric, 2) AS "rate /h",
       to_char(state_since, 'Mon DD HH24:MI') AS since
  FROM credits.resource_overview WHERE project_id = 42 ORDER BY resource_id;

-- Runs one statement and says whether it was refused, and why (in a subtransaction: a
-- refused call leaves nothing behind).
CREATE FUNCTION pg_temp.attempt(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'done';
EXCEPTION WHEN OTHERS THEN
    RETURN format('refused with SQLSTATE %s: %s', SQLSTATE, SQLERRM);
END $$;

\echo 'The story of project 42 on a GPU cloud, 2 and 3 March 2026 (times are UTC).'
