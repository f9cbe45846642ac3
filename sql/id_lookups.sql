\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/metering_helpers.sql
\set ECHO all
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
-- A call about one transaction (completing or failing a deposit; requesting, completing or
-- failing a refund) finds it by its id, through the id's own index, whatever the statistics
-- say and however long the project's history is: it never reads the project's transactions one
-- by one, nor the whole table.  The scans of credits.transactions each call makes are counted
-- in its transaction (pg_stat_get_xact_numscans): first with the statistics of the empty
-- table, then after ANALYZE, when they say that a project has about one deposit, so that a
-- search by project looks as cheap as one by id.
-- Projects 9600-9899, November 2026: 9600 holds 400 deposits, every other one deposit.

SET credits.clock = '2026-11-01 00:00+00';
SELECT count(pg_temp.funded(p, '50.00')) AS funded FROM generate_series(9600, 9899) AS p;
SELECT count(pg_temp.deposit(9600, '5.00')) AS deposits FROM generate_series(1, 400);

-- What stmt reads of credits.transactions: how many times the whole table, how many times the
-- rows of a project (the history index), and whether it used the index by id.
CREATE FUNCTION pg_temp.reads_of(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    counts text := 'SELECT ARRAY[pg_stat_get_xact_numscans(''credits.transactions''::regclass),
                                 pg_stat_get_xact_numscans(''credits.transactions_history''::regclass),
                                 pg_stat_get_xact_numscans(''credits.transactions_deposit_ids''::regclass)]';
    before bigint[];
    after bigint[];
BEGIN
    EXECUTE counts INTO before;
    EXECUTE stmt;
    EXECUTE counts INTO after;
    RETURN format('whole table %s, by project %s, by id %s', after[1] - before[1], after[2] - before[2],
                  CASE WHEN after[3] > before[3] THEN 'yes' ELSE 'no' END);
END $$;

-- Each call in turn, on project 9600; the refunds take from its first deposit.
CREATE FUNCTION pg_temp.each_call() RETURNS TABLE (call text, reads text) LANGUAGE plpgsql AS $$
DECLARE
    first_deposit bigint := (SELECT min(t.transaction_id) FROM credits.transactions t
                              WHERE t.project_id = 9600 AND t.type = 'deposit');
    d bigint;
    r bigint;
BEGIN
    d := credits.add_credits(9600, '5.00');
    call := 'complete_deposit';
    reads := pg_temp.reads_of(format('SELECT credits.complete_deposit(9600, %s)', d));
    RETURN NEXT;
    d := credits.add_credits(9600, '5.00');
    call := 'fail_deposit';
    reads := pg_temp.reads_of(format('SELECT credits.fail_deposit(9600, %s, %L)', d, 'card_declined'));
    RETURN NEXT;
    call := 'refund_deposit';
    reads := pg_temp.reads_of(format('SELECT credits.refund_deposit(9600, %s, %L)', first_deposit, '1.00'));
    RETURN NEXT;
    r := (SELECT max(t.transaction_id) FROM credits.transactions t WHERE t.project_id = 9600 AND t.type = 'refund');
    call := 'complete_refund';
    reads := pg_temp.reads_of(format('SELECT credits.complete_refund(9600, %s)', r));
    RETURN NEXT;
    r := credits.refund_deposit(9600, first_deposit, '1.00');
    call := 'fail_refund';
    reads := pg_temp.reads_of(format('SELECT credits.fail_refund(9600, %s, %L)', r, 'provider_declined'));
    RETURN NEXT;
END $$;

-- The statistics of the empty table (as after a restore, before autovacuum's first ANALYZE).
SELECT * FROM pg_temp.each_call();
ANALYZE credits.transactions;
SELECT * FROM pg_temp.each_call();

-- The calls did their work: 403 deposits of 9600 completed (its first, 400 more, one a round)
-- and two failed, two refunds of 1.00 completed and two failed.
SELECT type, status, count(*), sum(amount) FROM credits.transactions WHERE project_id = 9600
 GROUP BY type, status ORDER BY type, status;
SELECT balance FROM credits.accounts WHERE project_id = 9600;
SELECT * FROM credits.verify(9600);
