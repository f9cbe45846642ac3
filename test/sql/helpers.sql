-- Helpers for the regress tests, included at the top of each with
--   \set ECHO none
--   \ir test/sql/helpers.sql
--   \set ECHO all
-- (pg_regress runs psql from the top of the tree with the test on standard input).

SET search_path = public, credits;
SET client_min_messages = warning;

-- Runs one statement; returns 'ok', or its SQLSTATE, message and detail.
CREATE FUNCTION pg_temp.fails(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    state text;
    msg text;
    detail text;
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
    RETURN state || ': ' || msg || CASE WHEN detail <> '' THEN ' | ' || detail ELSE '' END;
END $$;

-- A fingerprint of everything the ledger holds (row counts and balances), to show that a
-- refused call left no trace: compare it before and after.
CREATE FUNCTION pg_temp.ledger_state() RETURNS text LANGUAGE sql AS $$
    SELECT format('accounts=%s balance=%s methods=%s transactions=%s events=%s resources=%s usage_events=%s usage_rollup=%s usage_keys=%s auto_recharge=%s',
        (SELECT count(*) FROM credits.accounts), (SELECT coalesce(sum(balance::numeric), 0) FROM credits.accounts),
        (SELECT count(*) FROM credits.payment_methods), (SELECT count(*) || '/' || coalesce(sum(amount::numeric), 0) FROM credits.transactions),
        (SELECT count(*) FROM credits.events), (SELECT count(*) FROM credits.resources),
        (SELECT count(*) FROM credits.usage_events),
        (SELECT count(*) || '/' || coalesce(sum(units), 0) FROM credits.usage_rollup), (SELECT count(*) FROM credits.usage_keys),
        (SELECT count(*) FROM credits.auto_recharge));
$$;

SET client_min_messages = notice;
