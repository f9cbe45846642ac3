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

-- What a project can still spend (available_balance, and every start, which checks it) looks up
-- the resource of each hour of usage it has accrued by the resource's key: it never reads every
-- resource the project ever had (a hash join did, whatever the project had accrued), with the
-- statistics of the empty table or after ANALYZE.  Project 9900 ran 300 instances for half an
-- hour on 2 November (deducted at 01:00), and runs one now; the rows of credits.resources each
-- call reads are counted, by any scan of the table or its indexes (after a VACUUM, so that no
-- index entry of a row version stopping the instances left behind is counted).
SET credits.clock = '2026-11-02 00:00+00';
SELECT pg_temp.funded(9900, '500.00');
SELECT count(*) AS started FROM (SELECT credits.start_instance(9900, 'old-' || i, '0.10') FROM generate_series(1, 300) AS i) AS s;
SET credits.clock = '2026-11-02 00:30+00';
SELECT count(*) AS stopped FROM (SELECT credits.stop_instance(9900, 'old-' || i) FROM generate_series(1, 300) AS i) AS s;
SET credits.clock = '2026-11-02 01:00:05+00';
SELECT pg_temp.deduct(9900, 9900);
SELECT credits.start_instance(9900, 'gpu-now', '1.00');
SET credits.clock = '2026-11-02 01:30+00';
VACUUM credits.resources;

CREATE FUNCTION pg_temp.resource_rows_read(stmt text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    counts text := 'SELECT pg_stat_get_xact_tuples_returned(''credits.resources''::regclass)
                           + pg_stat_get_xact_tuples_fetched(''credits.resources''::regclass)
                           + (SELECT sum(pg_stat_get_xact_tuples_returned(i.indexrelid)) FROM pg_index i
                               WHERE i.indrelid = ''credits.resources''::regclass)';
    before bigint;
    after bigint;
BEGIN
    EXECUTE counts INTO before;
    EXECUTE stmt;
    EXECUTE counts INTO after;
    RETURN after - before;
END $$;

CREATE FUNCTION pg_temp.resource_reads() RETURNS TABLE (call text, resource_rows_read bigint) LANGUAGE sql AS $$
    SELECT 'available_balance', pg_temp.resource_rows_read('SELECT credits.available_balance(9900)')
    UNION ALL
    SELECT 'start_instance', pg_temp.resource_rows_read('SELECT credits.start_instance(9900, ''gpu-next'', ''1.00'')')
    UNION ALL
    SELECT 'stop_instance', pg_temp.resource_rows_read('SELECT credits.stop_instance(9900, ''gpu-next'')');
$$;

SELECT * FROM pg_temp.resource_reads();
ANALYZE credits.resources;
SELECT * FROM pg_temp.resource_reads();
-- (what it can spend: 500.00 less 300 half hours at 0.10 and gpu-now's 29 minutes 55 seconds
-- at 1.00, 0.498611; gpu-next ran no time: the clock stood still)
SELECT credits.available_balance(9900);
SELECT * FROM credits.verify(9900);
