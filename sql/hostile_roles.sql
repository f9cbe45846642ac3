\set ECHO none
\ir test/sql/helpers.sql
\set ECHO all
--
-- Hostile roles (README "Roles and safety", "Roles"): every API function, the views,
-- the tables, the internal functions and the superuser-only settings, tried as
-- credits_reader, credits_app, credits_worker and a role with no grant at all.  A call
-- without the grant is refused with 42501; a granted call runs (and is undone here).
-- Projects 7100-7199.
--
SET credits.clock = '2026-03-02 10:30+00';
SET timezone = 'UTC';
CREATE ROLE regress_credits_nobody;
CREATE ROLE regress_credits_login LOGIN IN ROLE credits_app;   -- how a deployment grants a role

-- Ids from sequences shared with the other tests are never printed: mask them.
CREATE FUNCTION pg_temp.mask(msg text) RETURNS text LANGUAGE sql AS $$
    SELECT regexp_replace(msg, '\m(deposit|event|method|transaction) (-?[0-9]+)\M', '\1 #', 'g');
$$;
-- Runs stmt as role and undoes it: fails(stmt) with ids masked.
CREATE FUNCTION pg_temp.attack_as(role text, stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    result text;
BEGIN
    BEGIN
        EXECUTE format('SET LOCAL ROLE %I', role);
        result := pg_temp.fails(stmt);
        RESET ROLE;
        RAISE EXCEPTION USING ERRCODE = 'ZZ999', MESSAGE = result;    -- undo the case
    EXCEPTION WHEN SQLSTATE 'ZZ999' THEN
        GET STACKED DIAGNOSTICS result = MESSAGE_TEXT;
    END;
    RETURN pg_temp.mask(result);
END $$;
-- 'ok' or the SQLSTATE alone, for the overview.
CREATE FUNCTION pg_temp.code(result text) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN result = 'ok' THEN 'ok' ELSE left(result, 5) END;
$$;

-- The scene: project 7100 with a method, a pending deposit, a running instance, a volume and
-- an event never claimed.
SELECT credits.open_account(7100);
SELECT credits.add_payment_method(7100, 'pm_roles') AS m \gset
SELECT credits.add_credits(7100, '50.00') AS dep \gset
SELECT credits.complete_deposit(7100, credits.add_credits(7100, '100.00'));
SELECT credits.start_instance(7100, 'i-1', '1.00'), credits.attach_volume(7100, 'v-1', '0.10');
SELECT max(event_id) AS ev FROM credits.events WHERE project_id = 7100 \gset
SELECT pg_temp.ledger_state() AS scene \gset

CREATE TEMP TABLE calls (n serial, what text, stmt text);
INSERT INTO calls (what, stmt) VALUES
    -- the API
    ('open_account',               'SELECT credits.open_account(7101)'),
    ('add_payment_method',         'SELECT credits.add_payment_method(7100, ''pm_roles_2'')'),
    ('set_default_payment_method', format('SELECT credits.set_default_payment_method(7100, %s)', :m)),
    ('remove_payment_method',      format('SELECT credits.remove_payment_method(7100, %s)', :m)),
    ('add_credits',                'SELECT credits.add_credits(7100, ''10'')'),
    ('complete_deposit',           format('SELECT credits.complete_deposit(7100, %s)', :dep)),
    ('fail_deposit',               format('SELECT credits.fail_deposit(7100, %s)', :dep)),
    ('start_instance',             'SELECT credits.start_instance(7100, ''i-2'', ''1'')'),
    ('stop_instance',              'SELECT credits.stop_instance(7100, ''i-1'')'),
    ('attach_volume',              'SELECT credits.attach_volume(7100, ''v-2'', ''1'')'),
    ('delete_volume',              'SELECT credits.delete_volume(7100, ''v-1'')'),
    ('record_usage',               'SELECT credits.record_usage(7100, ''api:chat'', ''0.01'')'),
    ('record_usage_batch',         'SELECT credits.record_usage_batch(''{7100}'', ''{api:chat}'', ''{0.01}'')'),
    ('configure_auto_recharge',    'SELECT credits.configure_auto_recharge(7100, true, ''1'', ''10'')'),
    ('claim_events',               'SELECT count(*) FROM credits.claim_events(1)'),
    ('ack_event',                  format('SELECT credits.ack_event(%s)', :ev)),
    ('run_hourly_deductions',      'SELECT credits.run_hourly_deductions()'),
    ('run_balance_checks',         'SELECT credits.run_balance_checks()'),
    ('schedule_jobs',              'SELECT credits.schedule_jobs()'),
    ('unschedule_jobs',            'SELECT credits.unschedule_jobs()'),
    ('verify',                     'SELECT count(*) FROM credits.verify(7100)'),
    ('available_balance',          'SELECT credits.available_balance(7100)'),
    -- the views
    ('balance_overview',           'SELECT count(*) FROM credits.balance_overview'),
    ('transaction_history',        'SELECT count(*) FROM credits.transaction_history'),
    ('resource_overview',          'SELECT count(*) FROM credits.resource_overview'),
    ('usage_in_progress',          'SELECT count(*) FROM credits.usage_in_progress'),
    -- the tables: nobody but the owner reads or writes them
    ('SELECT accounts',            'SELECT count(*) FROM credits.accounts'),
    ('SELECT payment_methods',     'SELECT count(*) FROM credits.payment_methods'),
    ('SELECT events',              'SELECT count(*) FROM credits.events'),
    ('INSERT accounts',            'INSERT INTO credits.accounts (project_id, balance, opened_at) VALUES (7102, ''1000'', now())'),
    ('UPDATE accounts',            'UPDATE credits.accounts SET balance = balance + ''1000''::credits.credits WHERE project_id = 7100'),
    ('UPDATE transactions',        format('UPDATE credits.transactions SET status = ''completed'', completed_at = now() WHERE transaction_id = %s', :dep)),
    ('DELETE transactions',        'DELETE FROM credits.transactions WHERE project_id = 7100'),
    ('TRUNCATE transactions',      'TRUNCATE credits.transactions'),
    ('INSERT usage_events',        'INSERT INTO credits.usage_events VALUES (7100, ''api:x'', now(), ''-5'')'),
    ('DELETE usage_events',        'DELETE FROM credits.usage_events'),
    ('UPDATE events',              'UPDATE credits.events SET acked_at = now()'),
    ('UPDATE resources',           'UPDATE credits.resources SET rate_per_hour = ''0.000001'''),
    ('UPDATE auto_recharge',       'UPDATE credits.auto_recharge SET armed = true'),
    -- the internal functions
    ('_request_charge',            format('SELECT credits._request_charge(7100, ''deposit'', ''1000'', %s, NULL)', :m)),
    ('_cut_off',                   'SELECT credits._cut_off(7100, now())'),
    ('_restore_volumes',           'SELECT credits._restore_volumes(7100, now())'),
    ('_book_usage',                'SELECT credits._book_usage(7100, ''instance'', ''i-1'', ''-100'', now() - interval ''1 hour'', now())'),
    ('_fold_usage_events',         'SELECT credits._fold_usage_events(now())'),
    ('_record_usage',              'SELECT credits._record_usage(7100, ''api:chat'', ''0.01'', NULL)'),
    ('_deduct_ended_hours',        'SELECT credits._deduct_ended_hours(now(), now())'),
    ('_enqueue_event',             'SELECT credits._enqueue_event(7100, ''balance_depleted'', NULL, NULL, ''{}'')'),
    ('_lock_periodic_runs',        'SELECT credits._lock_periodic_runs()'),
    ('_zero_balance_decide',       'SELECT credits._zero_balance_decide()'),
    -- the superuser-only settings, and the ways around them
    ('SET credits.clock',          'SET credits.clock = ''2030-01-01 00:00+00'''),
    ('set_config credits.clock',   'SELECT set_config(''credits.clock'', ''2030-01-01 00:00+00'', false)'),
    ('SET credits.minimum_deposit', 'SET credits.minimum_deposit = ''0.01'''),
    ('SET credits.event_lease',    'SET credits.event_lease = 1'),
    ('ALTER ROLE SET credits.clock', 'ALTER ROLE CURRENT_USER SET credits.clock = ''2030-01-01 00:00+00'''),
    -- planting or changing objects
    ('CREATE TABLE in credits',    'CREATE TABLE credits.evil (x int)'),
    ('CREATE FUNCTION in credits', 'CREATE FUNCTION credits.evil() RETURNS int LANGUAGE sql RETURN 1'),
    ('ALTER FUNCTION add_credits', 'ALTER FUNCTION credits.add_credits(bigint, credits.credits, bigint, text) SECURITY INVOKER'),
    ('DROP VIEW balance_overview', 'DROP VIEW credits.balance_overview');

-- What each role may do: ok, or the SQLSTATE that refused it.
SELECT c.what, pg_temp.code(pg_temp.attack_as('credits_reader', c.stmt)) AS reader,
       pg_temp.code(pg_temp.attack_as('credits_app', c.stmt)) AS app,
       pg_temp.code(pg_temp.attack_as('credits_worker', c.stmt)) AS worker,
       pg_temp.code(pg_temp.attack_as('regress_credits_login', c.stmt)) AS app_login,
       pg_temp.code(pg_temp.attack_as('regress_credits_nobody', c.stmt)) AS nobody
  FROM calls c ORDER BY c.n;

-- The messages, once per distinct one.
SELECT DISTINCT m.message COLLATE "C" AS message
  FROM calls c, unnest(ARRAY['credits_reader', 'credits_app', 'credits_worker', 'regress_credits_nobody']) AS r,
       LATERAL (SELECT regexp_replace(pg_temp.attack_as(r, c.stmt),
                                      '(function|table|relation|view|schema|parameter) \S+', '\1 ...') AS message) AS m
 WHERE m.message <> 'ok'
 ORDER BY 1;

-- Nothing was written, the settings and roles are as they were.
SELECT pg_temp.ledger_state() = :'scene' AS nothing_written;
SELECT current_user = session_user AS own_role, current_setting('credits.clock') AS clock,
       current_setting('credits.minimum_deposit') AS minimum_deposit;
SELECT * FROM credits.verify(7100);

-- A session of a login role with credits_app cannot become another role or move the clock.
-- (Above, the session user is a superuser, which SET ROLE would let back in.)
SELECT current_user AS superuser \gset
\c - regress_credits_login
SELECT session_user, current_user;
SET ROLE credits_worker;
SET SESSION AUTHORIZATION credits_worker;
ALTER ROLE CURRENT_USER SET credits.clock = '2030-01-01 00:00+00';
-- Before the library is loaded the setting is a placeholder that takes any value; loading
-- the library (the first call) throws the value away with a warning.
SET credits.clock = '2030-01-01 00:00+00';
SELECT credits.now() < '2030-01-01' AS clock_not_moved;
SET credits.clock = '2030-01-01 00:00+00';
SELECT credits.add_credits(7100, '10') IS NOT NULL AS pending_deposit;   -- granted through credits_app
SELECT credits.complete_deposit(7100, (SELECT max(transaction_id) FROM credits.transaction_history
                                        WHERE project_id = 7100 AND status = 'pending'));
\c - :superuser
SELECT status, count(*) FROM credits.transactions WHERE project_id = 7100 AND type = 'deposit' GROUP BY 1 ORDER BY 1;
SELECT * FROM credits.verify(7100);
DROP ROLE regress_credits_nobody, regress_credits_login;
