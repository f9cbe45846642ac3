\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/ledger_helpers.sql
\set ECHO all
--
-- Roles and privileges (README "Roles and safety"): users never write the tables; every change
-- goes through SECURITY DEFINER functions with a pinned search_path; credits_reader reads the
-- views, credits_app runs the product, credits_worker the payments, events and periodic runs.
-- Project 4501.
--
SELECT current_user AS superuser \gset
-- (the other roles use this session's helpers)
GRANT ALL ON pg_temp.kept_ids TO PUBLIC;

--
-- The catalogue.
--
SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls
  FROM pg_roles WHERE rolname LIKE 'credits\_%' ORDER BY 1;
SELECT r.rolname AS role, m.rolname AS member
  FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
 WHERE r.rolname LIKE 'credits\_%' ORDER BY 1, 2;
-- every SECURITY DEFINER function pins its search_path (none without)
SELECT p.oid::regprocedure AS unpinned FROM pg_proc p
 WHERE p.pronamespace = 'credits'::regnamespace AND p.prosecdef
   AND NOT EXISTS (SELECT FROM unnest(p.proconfig) c WHERE c LIKE 'search\_path=%');
SELECT DISTINCT c AS pinned FROM pg_proc p, unnest(p.proconfig) c
 WHERE p.pronamespace = 'credits'::regnamespace AND p.prosecdef;
-- PUBLIC may run no SECURITY DEFINER function, and of the internal (_) ones only pure
-- arithmetic
SELECT p.oid::regprocedure AS public_may_run FROM pg_proc p
 WHERE p.pronamespace = 'credits'::regnamespace AND (p.prosecdef OR p.proname LIKE '\_%')
   AND (p.proacl IS NULL OR EXISTS (SELECT FROM aclexplode(p.proacl) x
                                     WHERE x.grantee = 0 AND x.privilege_type = 'EXECUTE'))
 ORDER BY p.oid::regprocedure::text;
-- no role may write any table or sequence, and they read only the views
SELECT c.relname, c.relkind, r.rolname,
       array_remove(ARRAY[CASE WHEN has_table_privilege(r.oid, c.oid, 'SELECT') THEN 'SELECT' END,
                          CASE WHEN has_table_privilege(r.oid, c.oid, 'INSERT') THEN 'INSERT' END,
                          CASE WHEN has_table_privilege(r.oid, c.oid, 'UPDATE') THEN 'UPDATE' END,
                          CASE WHEN has_table_privilege(r.oid, c.oid, 'DELETE') THEN 'DELETE' END,
                          CASE WHEN has_table_privilege(r.oid, c.oid, 'TRUNCATE') THEN 'TRUNCATE' END],
                    NULL) AS privileges
  FROM pg_class c, pg_roles r
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'p', 'm')
   AND r.rolname IN ('credits_reader', 'credits_app', 'credits_worker')
   AND (has_table_privilege(r.oid, c.oid, 'SELECT') OR has_table_privilege(r.oid, c.oid, 'INSERT')
        OR has_table_privilege(r.oid, c.oid, 'UPDATE') OR has_table_privilege(r.oid, c.oid, 'DELETE')
        OR has_table_privilege(r.oid, c.oid, 'TRUNCATE'))
 ORDER BY 1, 3;
SELECT s.relname, r.rolname FROM pg_class s, pg_roles r
 WHERE s.relnamespace = 'credits'::regnamespace AND s.relkind = 'S'
   AND r.rolname IN ('credits_reader', 'credits_app', 'credits_worker')
   AND has_sequence_privilege(r.oid, s.oid, 'USAGE, SELECT, UPDATE');
-- who may run which function of the API (membership included; PUBLIC none of them).
-- record_usage is not SECURITY DEFINER: it is in C and writes without privilege checks, so
-- its EXECUTE grant is the only gate (src/usage_record.c).
SELECT p.proname,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public,
       has_function_privilege('credits_reader', p.oid, 'EXECUTE') AS reader,
       has_function_privilege('credits_app', p.oid, 'EXECUTE') AS app,
       has_function_privilege('credits_worker', p.oid, 'EXECUTE') AS worker,
       p.prosecdef AS security_definer
  FROM pg_proc p
 WHERE p.pronamespace = 'credits'::regnamespace
   AND p.proname IN ('open_account', 'add_payment_method', 'set_default_payment_method',
                     'remove_payment_method', 'add_credits', 'complete_deposit', 'fail_deposit',
                     'start_instance', 'stop_instance', 'attach_volume', 'delete_volume',
                     'record_usage', 'record_usage_batch', 'run_hourly_deductions',
                     'run_balance_checks', 'schedule_jobs', 'unschedule_jobs',
                     'configure_auto_recharge', 'claim_events', 'ack_event', 'verify',
                     'available_balance')
 ORDER BY 1;

--
-- credits_app: opens the account, adds a payment method, requests deposits, reads the views;
-- cannot complete its own deposits, claim events, or touch a table.
--
SET credits.clock = '2026-03-06 09:00+00';
-- (events other files left unacknowledged are acknowledged, so the worker below claims only
-- this file's events)
SET credits.clock = '2100-01-01 00:00+00';
SELECT count(credits.ack_event(e.event_id)) >= 0 AS drained FROM credits.claim_events(10000) AS e;
SET credits.clock = '2026-03-06 09:00+00';
SET ROLE credits_app;
SELECT credits.open_account(4501);
SELECT pg_temp.keep('method', 'VISA', credits.add_payment_method(4501, 'pm_visa_4501', 'Visa')) AS visa \gset
SELECT pg_temp.keep('transaction', 'D1', credits.add_credits(4501, '40.00', idempotency_key => 'roles-1')) AS d1 \gset
SELECT pg_temp.keep('transaction', 'D2', credits.add_credits(4501, '15.00')) AS d2 \gset
SELECT pg_temp.n('transaction', transaction_id) AS id, type, description, amount, status
  FROM credits.transaction_history WHERE project_id = 4501;
SELECT project_id, current_balance, available_balance FROM credits.balance_overview WHERE project_id = 4501;
SELECT * FROM credits.verify(4501);
RESET ROLE;
SELECT pg_temp.ledger_state() AS before \gset
SET ROLE credits_app;
SELECT pg_temp.refused('UPDATE credits.accounts SET balance = ''1000.00'' WHERE project_id = 4501');
SELECT pg_temp.refused('SELECT * FROM credits.accounts');
SELECT pg_temp.refused('INSERT INTO credits.accounts (project_id, balance, opened_at) VALUES (4502, ''1000'', now())');
SELECT pg_temp.refused(format('UPDATE credits.transactions SET status = ''completed'', completed_at = now() WHERE transaction_id = %s', :d1));
SELECT pg_temp.refused('DELETE FROM credits.events');
SELECT pg_temp.refused('UPDATE credits.payment_methods SET is_default = false');
SELECT pg_temp.refused('SELECT nextval(''credits.transactions_transaction_id_seq'')');
SELECT pg_temp.refused(format('SELECT credits.complete_deposit(4501, %s)', :d1));
SELECT pg_temp.refused(format('SELECT credits.fail_deposit(4501, %s)', :d1));
SELECT pg_temp.refused('SELECT * FROM credits.claim_events()');
SELECT pg_temp.refused('SELECT credits.ack_event(1)');
SELECT pg_temp.refused('SELECT credits.run_hourly_deductions()');
SELECT pg_temp.refused('SELECT credits.run_balance_checks()');
SELECT pg_temp.refused('SELECT credits.schedule_jobs()');
SELECT pg_temp.refused(format('SELECT credits._request_charge(4501, ''deposit'', ''1000'', %s, NULL)', :visa));
SELECT pg_temp.refused('SELECT credits._cut_off(4501, now())');
SELECT pg_temp.refused('SET credits.clock = ''2020-01-01 00:00+00''');
SELECT pg_temp.refused('SET credits.minimum_deposit = ''0.01''');
RESET ROLE;
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;

--
-- credits_reader: the views and verify(), nothing else.
--
SET ROLE credits_reader;
SELECT pg_temp.n('transaction', transaction_id) AS id, date, type, amount, status
  FROM credits.transaction_history WHERE project_id = 4501;
SELECT project_id, current_balance, accumulating, available_balance, burn_rate, hours_remaining
  FROM credits.balance_overview WHERE project_id = 4501;
SELECT * FROM credits.resource_overview WHERE project_id = 4501;
SELECT * FROM credits.usage_in_progress WHERE project_id = 4501;
SELECT * FROM credits.accumulating_by_project WHERE project_id = 4501;
SELECT * FROM credits.verify(4501);
SELECT credits.available_balance(4501);
SELECT credits.minimum_deposit();
RESET ROLE;
SELECT pg_temp.ledger_state() AS before \gset
SET ROLE credits_reader;
SELECT pg_temp.refused('SELECT credits.add_credits(4501, ''25'')');
SELECT pg_temp.refused('SELECT credits.open_account(4502)');
SELECT pg_temp.refused('SELECT credits.add_payment_method(4501, ''pm_reader'')');
SELECT pg_temp.refused(format('SELECT credits.complete_deposit(4501, %s)', :d1));
SELECT pg_temp.refused('SELECT * FROM credits.claim_events()');
SELECT pg_temp.refused('SELECT credits.start_instance(4501, ''gpu'', ''1'')');
SELECT pg_temp.refused('SELECT * FROM credits.transactions');
SELECT pg_temp.refused('SELECT * FROM credits.payment_methods');
SELECT pg_temp.refused('SELECT * FROM credits.events');
RESET ROLE;
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;

--
-- credits_worker: claims the charge requests, completes and fails deposits, acknowledges.
--
SET credits.clock = '2026-03-06 09:02+00';
SET ROLE credits_worker;
SELECT pg_temp.keep('event', 'E_' || pg_temp.n('transaction', transaction_id), event_id) IS NOT NULL AS kept,
       kind, pg_temp.n('transaction', transaction_id) AS transaction,
       payload->>'amount' AS amount, payload->>'provider_ref' AS provider_ref, claims
  FROM credits.claim_events() ORDER BY event_id;
SELECT credits.complete_deposit(4501, :d1, 'https://pay.example/in_roles_1');
SELECT credits.fail_deposit(4501, :d2, 'card_declined');
SELECT credits.ack_event(id) FROM pg_temp.kept_ids WHERE kind = 'event' ORDER BY id;
SELECT pg_temp.refused('SELECT * FROM credits.events');
RESET ROLE;
SELECT pg_temp.ledger_state() AS before \gset
SET ROLE credits_worker;
SELECT pg_temp.refused('SELECT credits.add_credits(4501, ''25'')');
SELECT pg_temp.refused('SELECT credits.open_account(4502)');
SELECT pg_temp.refused('SELECT credits.configure_auto_recharge(4501, true, ''5'', ''20'')');
SELECT pg_temp.refused('UPDATE credits.accounts SET balance = 0');
SELECT pg_temp.refused('UPDATE credits.events SET acked_at = NULL');
SELECT pg_temp.refused('SELECT credits.schedule_jobs()');
RESET ROLE;
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT pg_temp.n('transaction', transaction_id) AS id, type, status, amount, invoice_url
  FROM credits.transaction_history WHERE project_id = 4501;
SELECT balance FROM credits.accounts WHERE project_id = 4501;

-- What an app runs, its readers see: balance, usage accumulating, burn rate and runway.
SET ROLE credits_app;
SELECT credits.start_instance(4501, 'gpu-roles', '4.00');
RESET ROLE;
SET credits.clock = '2026-03-06 09:32+00';
SET ROLE credits_reader;
SELECT * FROM credits.balance_overview WHERE project_id = 4501;
SELECT pg_temp.n('transaction', transaction_id) AS id, date, type, description, amount, status
  FROM credits.transaction_history WHERE project_id = 4501;
SELECT * FROM credits.resource_overview WHERE project_id = 4501;
SET ROLE credits_app;
SELECT credits.stop_instance(4501, 'gpu-roles');
RESET ROLE;

--
-- A role outside these three sees nothing of the schema.
--
CREATE ROLE regress_credits_outsider;
SET ROLE regress_credits_outsider;
SELECT pg_temp.refused('SELECT * FROM credits.balance_overview');
SELECT pg_temp.refused('SELECT credits.add_credits(4501, ''25'')');
SELECT pg_temp.refused('SELECT credits.verify()');
RESET ROLE;
DROP ROLE regress_credits_outsider;

--
-- The clock and the minimum are superuser-only even when a session sets them before the
-- library is loaded: the value set then is discarded, with a warning, when it loads.
--
SELECT * FROM credits.verify();
CREATE ROLE regress_credits_app_login LOGIN IN ROLE credits_app;
\c - regress_credits_app_login
SET credits.clock = '2000-01-01 00:00+00';
SET credits.minimum_deposit = '0.01';
SELECT credits.now() > '2020-01-01' AS real_time, credits.minimum_deposit();
SHOW credits.clock;
SHOW credits.minimum_deposit;
SET credits.clock = '2000-01-01 00:00+00';
\c - :superuser
DROP ROLE regress_credits_app_login;
