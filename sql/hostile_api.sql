\set ECHO none
\ir test/sql/helpers.sql
\set ECHO all
--
-- Hostile input to every API function (README "Roles and safety": every function rejects bad
-- input with a clear message and an SQLSTATE, and leaves no trace).  Projects 7000-7099.
--
-- Each case runs through pg_temp.attack(stmt), which undoes it afterwards: fails(stmt) ('ok'
-- or 'SQLSTATE: message | detail'), with ids from the shared sequences masked as '#'.  A
-- refused call must show an SQLSTATE of the README's error table, and ledger_state() must be
-- the same after it (attack() appends [BUT THE LEDGER CHANGED] otherwise).
--
SET credits.clock = '2026-03-01 10:30+00';
SET timezone = 'UTC';

-- Ids from sequences shared with the other tests are never printed: mask them.
CREATE FUNCTION pg_temp.mask(msg text) RETURNS text LANGUAGE sql AS $$
    SELECT regexp_replace(msg, '\m(deposit|event|method|transaction|Transaction|key) (-?[0-9]+)\M', '\1 #', 'g');
$$;
-- Runs one case and undoes it.  Returns fails(stmt), with ids masked: 'ok' or the error.  A
-- refused call that left a trace in ledger_state() is flagged (it cannot, unless a function
-- swallowed its own error after writing).
CREATE FUNCTION pg_temp.attack(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    before text := pg_temp.ledger_state();
    result text;
BEGIN
    BEGIN
        result := pg_temp.fails(stmt);
        IF result <> 'ok' AND pg_temp.ledger_state() <> before THEN
            result := result || ' [BUT THE LEDGER CHANGED]';
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'ZZ999', MESSAGE = result;    -- undo the case
    EXCEPTION WHEN SQLSTATE 'ZZ999' THEN
        GET STACKED DIAGNOSTICS result = MESSAGE_TEXT;
    END;
    RETURN pg_temp.mask(result);
END $$;

--
-- The scene: project 7000 with a default method, a spare and a removed one, a completed, a
-- pending and a failed deposit, a running and a stopped instance, an available and a deleted
-- volume, API usage with a key, an accumulating usage transaction and an unclaimed event;
-- project 7001 with a method, a pending deposit, an instance and a volume of its own.
--
SELECT credits.open_account(p) FROM (VALUES (7000), (7001)) AS v(p);
SELECT credits.add_payment_method(7000, 'pm_hostile_main', 'Main card') AS m_main,
       credits.add_payment_method(7000, 'pm_hostile_spare', 'Spare card', false) AS m_spare,
       credits.add_payment_method(7000, 'pm_hostile_gone', NULL, false) AS m_gone,
       credits.add_payment_method(7001, 'pm_hostile_other', 'Other project''s card') AS m_other \gset
SELECT credits.remove_payment_method(7000, :m_gone);
SELECT credits.add_credits(7000, '100.00', NULL, 'hostile-dep-1') AS dep_done,
       credits.add_credits(7000, '10.00', NULL, 'hostile-dep-2') AS dep_pending,
       credits.add_credits(7000, '20.00') AS dep_failed,
       credits.add_credits(7001, '50.00') AS dep_other \gset
SELECT credits.complete_deposit(7000, :dep_done, 'https://invoices.example/hostile-1');
SELECT credits.refund_deposit(7000, :dep_done, '2.00', 'hostile scene') AS refund_pending \gset
SELECT credits.fail_deposit(7000, :dep_failed, 'card_declined');
SELECT credits.complete_deposit(7001, :dep_other);
SELECT credits.start_instance(7000, 'i-run', '1.00'), credits.start_instance(7000, 'i-stop', '2.00'),
       credits.attach_volume(7000, 'v-avail', '0.10'), credits.attach_volume(7000, 'v-del', '0.10'),
       credits.start_instance(7001, 'i-other', '1.00'), credits.attach_volume(7001, 'v-other', '0.10'),
       credits.record_usage(7000, 'api:chat', '0.25', 'hostile-use-1');
SET credits.clock = '2026-03-01 10:45+00';
SELECT credits.stop_instance(7000, 'i-stop'), credits.delete_volume(7000, 'v-del');
SELECT transaction_id AS usage_tx FROM credits.transactions
 WHERE project_id = 7000 AND resource_id = 'i-stop' AND type = 'usage' \gset
SELECT min(event_id) AS event_unclaimed FROM credits.events WHERE project_id = 7000 \gset
SELECT resource_id, kind, state, rate_per_hour FROM credits.resource_overview
 WHERE project_id BETWEEN 7000 AND 7099 ORDER BY project_id, resource_id COLLATE "C";
SELECT project_id, type, status, amount, description FROM credits.transactions
 WHERE project_id BETWEEN 7000 AND 7099 ORDER BY project_id, transaction_id;
SELECT * FROM credits.verify() WHERE project_id BETWEEN 7000 AND 7099;
SELECT pg_temp.ledger_state() AS scene \gset

--
-- 1. Every argument of every API function, one at a time, replaced by hostile values while the
--    others stay valid.  Each function's valid call (its "base") is shown first; every case is
--    undone after it ran, so the cases do not see each other.
--
CREATE TEMP TABLE api (fn regprocedure PRIMARY KEY, base text[] NOT NULL);
INSERT INTO api VALUES
    ('credits.open_account(bigint)',                       ARRAY['7000']),
    ('credits.add_payment_method(bigint,text,text,boolean)', ARRAY['7000', '''pm_hostile_new''', '''New card''', 'true']),
    ('credits.set_default_payment_method(bigint,bigint)',   ARRAY['7000', :'m_main']),
    ('credits.remove_payment_method(bigint,bigint)',        ARRAY['7000', :'m_spare']),
    ('credits.add_credits(bigint,credits.credits,bigint,text)', ARRAY['7000', '''10.00''', :'m_main', '''hostile-dep-new''']),
    ('credits.complete_deposit(bigint,bigint,text)',        ARRAY['7000', :'dep_pending', '''https://invoices.example/x''']),
    ('credits.fail_deposit(bigint,bigint,text)',            ARRAY['7000', :'dep_pending', '''card_declined''']),
    ('credits.claim_events(integer)',                       ARRAY['1']),
    ('credits.ack_event(bigint)',                           ARRAY[:'event_unclaimed']),
    ('credits.available_balance(bigint)',                   ARRAY['7000']),
    ('credits.start_instance(bigint,text,credits.credits)', ARRAY['7000', '''i-new''', '''1.00''']),
    ('credits.stop_instance(bigint,text)',                  ARRAY['7000', '''i-run''']),
    ('credits.attach_volume(bigint,text,credits.credits)',  ARRAY['7000', '''v-new''', '''0.10''']),
    ('credits.delete_volume(bigint,text)',                  ARRAY['7000', '''v-avail''']),
    ('credits.record_usage(bigint,text,credits.credits,text)', ARRAY['7000', '''api:chat''', '''0.25''', '''hostile-use-new''']),
    ('credits.record_usage_batch(bigint[],text[],credits.credits[],text[])',
         ARRAY['''{7000}''', '''{api:chat}''', '''{0.25}''', '''{hostile-use-new}''']),
    ('credits.run_hourly_deductions()',                     ARRAY[]::text[]),
    ('credits.run_balance_checks()',                        ARRAY[]::text[]),
    ('credits.run_usage_summaries(integer)',                ARRAY['7']),
    ('credits.configure_auto_recharge(bigint,boolean,credits.credits,credits.credits,bigint)',
         ARRAY['7000', 'true', '''5.00''', '''10.00''', :'m_spare']),
    ('credits.configure_limits(bigint,credits.credits,interval,credits.credits,credits.credits,text)',
         ARRAY['7000', '''5.00''', '''1 hour''', '''10.00''', '''100.00''', '''alert''']),
    ('credits.configure_alerts(bigint,credits.credits,interval)', ARRAY['7000', '''1.00''', '''1 hour''']),
    ('credits.verify(bigint)',                              ARRAY['7000']),
    ('credits.grant_credits(bigint,credits.credits,timestamp with time zone,integer,text[],text,text)',
         ARRAY['7000', '''1.00''', '''2026-04-01 00:00+00''', '50', '''{api}''', '''Hostile grant''', '''hostile-grant-new''']),
    ('credits.refund_deposit(bigint,bigint,credits.credits,text,text)',
         ARRAY['7000', :'dep_done', '''1.00''', '''customer''', '''hostile-refund-new''']),
    ('credits.complete_refund(bigint,bigint)',              ARRAY['7000', :'refund_pending']),
    ('credits.fail_refund(bigint,bigint,text)',             ARRAY['7000', :'refund_pending', '''declined''']),
    ('credits.statement(bigint,timestamp with time zone,timestamp with time zone)',
         ARRAY['7000', '''2026-03-01 00:00+00''', '''2026-03-02 00:00+00''']),
    ('credits.usage_by_resource(bigint,timestamp with time zone,timestamp with time zone,interval)',
         ARRAY['7000', '''2026-03-01 00:00+00''', '''2026-03-02 00:00+00''', '''1 hour''']),
    ('credits.schedule_jobs()',                             ARRAY[]::text[]),
    ('credits.unschedule_jobs()',                           ARRAY[]::text[]);

-- Every API function is in the table: the SECURITY DEFINER functions of schema credits whose
-- names do not start with an underscore, and the scheduling functions.  A new one must be
-- added here.
SELECT p.oid::regprocedure AS not_covered FROM pg_proc p
 WHERE p.pronamespace = 'credits'::regnamespace
   AND ((p.prosecdef AND p.proname NOT LIKE '\_%') OR p.proname IN ('schedule_jobs', 'unschedule_jobs'))
   AND p.oid NOT IN (SELECT fn FROM api);

-- Hostile values by argument name.  A null is tried only where the argument has no default
-- (a defaulted argument may be null by design).
CREATE TEMP TABLE hostile (arg text, shown text, value text);
INSERT INTO hostile
SELECT a, s, v
  FROM unnest(ARRAY['project_id']) AS a,
       (VALUES ('null', 'NULL::bigint'), ('unknown 7099', '7099'), ('-1', '-1'),
               ('other project 7001', '7001')) AS x(s, v)
UNION ALL
SELECT a, s, v
  FROM unnest(ARRAY['method_id', 'transaction_id', 'event_id']) AS a,
       (VALUES ('null', 'NULL::bigint'), ('0', '0'), ('-1', '-1'), ('max', '9223372036854775807')) AS x(s, v)
UNION ALL
SELECT a, s, v
  FROM unnest(ARRAY['amount', 'rate_per_hour', 'threshold', 'max_burn_rate', 'daily_budget', 'monthly_budget',
                    'below_balance']) AS a,
       (VALUES ('null', 'NULL::credits.credits'), ('0', '''0'''), ('-0.000001', '''-0.000001'''),
               ('-5', '''-5'''), ('max', '''9223372036854.775807'''), ('min', '''-9223372036854.775808'''),
               ('1e3', '''1e3'''), ('empty', '''''')) AS x(s, v)
UNION ALL
SELECT a, s, v
  FROM unnest(ARRAY['provider_ref', 'label', 'resource_id', 'idempotency_key', 'invoice_url', 'reason',
                    'description']) AS a,
       (VALUES ('null', 'NULL::text'), ('empty', ''''''), ('201 chars', 'repeat(''x'', 201)'),
               ('2049 chars', 'repeat(''x'', 2049)'), ('1 MB', 'repeat(''x'', 1048576)')) AS x(s, v)
UNION ALL
SELECT a, s, v
  FROM unnest(ARRAY['min_runway', 'below_runway']) AS a,
       (VALUES ('0', '''0'''), ('-1 hour', '''-1 hour'''), ('1 day -25 hours', '''1 day -25 hours'''),
               ('soon', '''soon'''), ('empty', '''''')) AS x(s, v)
UNION ALL
SELECT 'on_budget', s, v
  FROM (VALUES ('null', 'NULL::text'), ('empty', ''''''), ('STOP', '''STOP'''), ('pause', '''pause'''),
               ('1 MB', 'repeat(''x'', 1048576)')) AS x(s, v)
UNION ALL
SELECT a, 'null', 'NULL::boolean' FROM unnest(ARRAY['enabled', 'make_default']) AS a
UNION ALL
SELECT a, s, v
  FROM unnest(ARRAY['expires_at', 'from_time', 'to_time']) AS a,
       (VALUES ('null', 'NULL::timestamptz'), ('infinity', '''infinity'''), ('-infinity', '''-infinity'''),
               ('2000-01-01', '''2000-01-01 00:00+00''')) AS x(s, v)
UNION ALL
SELECT 'priority', s, v
  FROM (VALUES ('null', 'NULL::integer'), ('-1', '-1'), ('101', '101'), ('max', '2147483647')) AS x(s, v)
UNION ALL
SELECT 'applies_to', s, v
  FROM (VALUES ('empty array', '''{}''::text[]'), ('{NULL}', '''{NULL}''::text[]'), ('{gpu}', '''{gpu}''::text[]'),
               ('2-D', '''{{api}}''::text[]')) AS x(s, v)
UNION ALL
SELECT 'bucket', s, v
  FROM (VALUES ('null', 'NULL::interval'), ('0', '''0'''), ('-1 hour', '''-1 hour'''), ('1 month', '''1 month''')) AS x(s, v)
UNION ALL
SELECT 'max_days', s, v
  FROM (VALUES ('null', 'NULL::integer'), ('0', '0'), ('-1', '-1'), ('max', '2147483647')) AS x(s, v)
UNION ALL
SELECT 'max_events', s, v
  FROM (VALUES ('null', 'NULL::integer'), ('-1', '-1'), ('10001', '10001'), ('max', '2147483647')) AS x(s, v)
UNION ALL
SELECT a, s, v
  FROM unnest(ARRAY['project_ids', 'resource_ids', 'amounts', 'idempotency_keys']) AS a,
       (VALUES ('null', 'NULL'), ('empty array', '''{}'''), ('{NULL}', '''{NULL}'''),
               ('two elements', 'NULL'), ('2-D', 'NULL')) AS x(s, v);
-- arrays: type-specific values
UPDATE hostile SET value = CASE arg
        WHEN 'project_ids' THEN '''{7000,7000}''::bigint[]' WHEN 'resource_ids' THEN '''{api:chat,api:chat}''::text[]'
        WHEN 'amounts' THEN '''{0.25,0.25}''::credits.credits[]' ELSE '''{hostile-use-new,hostile-use-new}''::text[]' END
 WHERE shown = 'two elements';
UPDATE hostile SET value = CASE arg
        WHEN 'project_ids' THEN '''{{7000}}''::bigint[]' WHEN 'resource_ids' THEN '''{{api:chat}}''::text[]'
        WHEN 'amounts' THEN '''{{0.25}}''::credits.credits[]' ELSE '''{{hostile-use-new}}''::text[]' END
 WHERE shown = '2-D';
UPDATE hostile SET value = value || CASE arg
        WHEN 'project_ids' THEN '::bigint[]' WHEN 'amounts' THEN '::credits.credits[]' ELSE '::text[]' END
 WHERE arg LIKE '%s' AND shown IN ('null', 'empty array', '{NULL}');

CREATE TEMP TABLE cases AS
SELECT a.fn, p.arg, p.pos, h.shown,
       format('SELECT %s(%s)', a.fn::oid::regproc,
              array_to_string(ARRAY(SELECT CASE WHEN i = p.pos THEN h.value ELSE a.base[i] END
                                      FROM generate_subscripts(a.base, 1) AS i ORDER BY i), ', ')) AS stmt
  FROM api a
  JOIN pg_proc f ON f.oid = a.fn
  CROSS JOIN LATERAL unnest(f.proargnames[1:f.pronargs]) WITH ORDINALITY AS p(arg, pos)
  JOIN hostile h ON h.arg = p.arg
 WHERE NOT (h.shown = 'null' AND p.pos > f.pronargs - f.pronargdefaults);

-- Arguments with no hostile values (a new argument name must be given some).
SELECT a.fn, p.arg FROM api a JOIN pg_proc f ON f.oid = a.fn, unnest(f.proargnames[1:f.pronargs]) AS p(arg)
 WHERE p.arg NOT IN (SELECT arg FROM hostile);

-- The base calls, then every case.  (schedule_jobs' notice depends on whether another test
-- created pg_cron: notices are not shown.)
SET client_min_messages = warning;
SELECT a.fn::oid::regproc AS function, pg_temp.attack(format('SELECT %s(%s)', a.fn::oid::regproc,
                                                              array_to_string(a.base, ', '))) AS base_call
  FROM api a ORDER BY a.fn::text COLLATE "C";
SELECT c.fn::oid::regproc AS function, c.arg, c.shown AS value, pg_temp.attack(c.stmt) AS result
  FROM cases c ORDER BY c.fn::text COLLATE "C", c.pos, c.shown COLLATE "C";
SELECT pg_temp.ledger_state() = :'scene' AS nothing_written;
SET client_min_messages = notice;

--
-- 2. Ids of the wrong project or kind, and illegal states.  Project 7002 has an account and
--    nothing else; project 7001 charges its auto-recharge to its only method.
--
SELECT credits.open_account(7002);
SELECT credits.configure_auto_recharge(7001, true, '0.00', '10.00', :m_other);
SELECT pg_temp.ledger_state() AS scene \gset
CREATE TEMP TABLE targeted (n serial, label text, stmt text);
INSERT INTO targeted (label, stmt) VALUES
    -- another project's payment method, deposit, instance or volume
    ('add_credits on the other project''s method', format('SELECT credits.add_credits(7000, ''10'', %s)', :m_other)),
    ('set_default_payment_method, other project', format('SELECT credits.set_default_payment_method(7000, %s)', :m_other)),
    ('remove_payment_method, other project', format('SELECT credits.remove_payment_method(7000, %s)', :m_other)),
    ('configure_auto_recharge, other project''s method', format('SELECT credits.configure_auto_recharge(7000, true, ''1'', ''10'', %s)', :m_other)),
    ('complete_deposit of the other project''s deposit', format('SELECT credits.complete_deposit(7000, %s)', :dep_other)),
    ('complete_deposit with the wrong project', format('SELECT credits.complete_deposit(7001, %s)', :dep_pending)),
    ('fail_deposit with the wrong project', format('SELECT credits.fail_deposit(7001, %s)', :dep_pending)),
    ('stop_instance of the other project''s instance', 'SELECT credits.stop_instance(7000, ''i-other'')'),
    ('delete_volume of the other project''s volume', 'SELECT credits.delete_volume(7000, ''v-other'')'),
    ('record_usage_batch with one unknown project', 'SELECT credits.record_usage_batch(''{7000,7099}'', ''{api:chat,api:chat}'', ''{0.25,0.25}'')'),
    -- ids of the wrong kind
    ('complete_deposit of a usage transaction', format('SELECT credits.complete_deposit(7000, %s)', :usage_tx)),
    ('fail_deposit of a usage transaction', format('SELECT credits.fail_deposit(7000, %s)', :usage_tx)),
    ('stop_instance of a volume', 'SELECT credits.stop_instance(7000, ''v-avail'')'),
    ('delete_volume of an instance', 'SELECT credits.delete_volume(7000, ''i-run'')'),
    ('start_instance with a volume''s id', 'SELECT credits.start_instance(7000, ''v-avail'', ''1'')'),
    ('attach_volume with an instance''s id', 'SELECT credits.attach_volume(7000, ''i-run'', ''1'')'),
    ('stop_instance of a resource that never existed', 'SELECT credits.stop_instance(7000, ''i-never'')'),
    ('stop_instance of an API product', 'SELECT credits.stop_instance(7000, ''api:chat'')'),
    -- illegal states
    ('complete_deposit of a completed deposit', format('SELECT credits.complete_deposit(7000, %s)', :dep_done)),
    ('fail_deposit of a completed deposit', format('SELECT credits.fail_deposit(7000, %s)', :dep_done)),
    ('complete_deposit of a failed deposit', format('SELECT credits.complete_deposit(7000, %s)', :dep_failed)),
    ('fail_deposit of a failed deposit', format('SELECT credits.fail_deposit(7000, %s)', :dep_failed)),
    ('attach_volume of a deleted volume', 'SELECT credits.attach_volume(7000, ''v-del'', ''0.10'')'),
    ('add_credits on a removed method', format('SELECT credits.add_credits(7000, ''10'', %s)', :m_gone)),
    ('set_default_payment_method to a removed method', format('SELECT credits.set_default_payment_method(7000, %s)', :m_gone)),
    ('remove_payment_method twice', format('SELECT credits.remove_payment_method(7000, %s)', :m_gone)),
    ('remove_payment_method that auto-recharge charges', format('SELECT credits.remove_payment_method(7001, %s)', :m_other)),
    ('add_credits without any method', 'SELECT credits.add_credits(7002, ''10'')'),
    ('configure_auto_recharge without any method', 'SELECT credits.configure_auto_recharge(7002, true, ''1'', ''10'')'),
    ('start_instance at zero balance', 'SELECT credits.start_instance(7002, ''i-1'', ''1'')'),
    ('attach_volume at zero balance', 'SELECT credits.attach_volume(7002, ''v-1'', ''1'')'),
    ('ack_event of an event never claimed', format('SELECT credits.ack_event(%s)', :event_unclaimed)),
    -- amounts
    ('add_credits below the minimum', 'SELECT credits.add_credits(7000, ''4.999999'')'),
    ('add_credits above the ceiling', 'SELECT credits.add_credits(7000, ''1000000000.000001'')'),
    ('configure_auto_recharge below the minimum', 'SELECT credits.configure_auto_recharge(7000, true, ''1'', ''4.99'')'),
    ('record_usage_batch, one amount above the ceiling', 'SELECT credits.record_usage_batch(''{7000,7000}'', ''{api:chat,api:chat}'', ''{0.25,1000000000.01}'')'),
    ('record_usage_batch, one amount zero', 'SELECT credits.record_usage_batch(''{7000,7000}'', ''{api:chat,api:chat}'', ''{0.25,0}'')'),
    ('record_usage_batch, one resource id 201 chars', format('SELECT credits.record_usage_batch(''{7000,7000}'', ARRAY[''api:chat'', %L], ''{0.25,0.25}'')', repeat('r', 201))),
    ('record_usage_batch, one key empty', 'SELECT credits.record_usage_batch(''{7000,7000}'', ''{api:chat,api:chat}'', ''{0.25,0.25}'', ''{k1,""}'')'),
    ('credits input out of range', 'SELECT credits.add_credits(7000, ''9223372036854.775808'')'),
    ('credits input with 7 fraction digits', 'SELECT credits.record_usage(7000, ''api:chat'', ''0.0000001'')'),
    -- idempotency keys reused with other arguments
    ('add_credits, key reused with another amount', 'SELECT credits.add_credits(7000, ''11.00'', NULL, ''hostile-dep-2'')'),
    ('add_credits, key reused with another method', format('SELECT credits.add_credits(7000, ''10.00'', %s, ''hostile-dep-2'')', :m_spare)),
    ('record_usage, key reused with another amount', 'SELECT credits.record_usage(7000, ''api:chat'', ''0.26'', ''hostile-use-1'')'),
    ('record_usage, key reused with another resource', 'SELECT credits.record_usage(7000, ''api:embed'', ''0.25'', ''hostile-use-1'')'),
    ('record_usage_batch, key reused with another amount', 'SELECT credits.record_usage_batch(''{7000}'', ''{api:chat}'', ''{0.26}'', ''{hostile-use-1}'')'),
    ('record_usage_batch, one key twice with two amounts', 'SELECT credits.record_usage_batch(''{7000,7000}'', ''{api:chat,api:chat}'', ''{0.25,0.26}'', ''{k2,k2}'')');
SELECT label, pg_temp.attack(stmt) AS result FROM targeted ORDER BY n;
SELECT pg_temp.ledger_state() = :'scene' AS nothing_written;

-- Amounts at the ceiling are taken, and the sums they make do not stop the periodic runs:
-- two API usages at the ceiling, and a project with an instance at the ceiling rate whose
-- balance checks and deductions did not run for three hours.
SELECT credits.open_account(7003), credits.add_payment_method(7003, 'pm_hostile_7003') IS NOT NULL AS method;
SELECT credits.complete_deposit(7003, credits.add_credits(7003, '1000000000'));
SELECT credits.start_instance(7003, 'i-big', '1000000000');
SELECT credits.record_usage(7003, 'api:big', '1000000000'), credits.record_usage(7003, 'api:big', '1000000000');
SET credits.clock = '2026-03-01 13:30+00';
SELECT credits.run_balance_checks() >= 1 AS cut_off, credits.run_hourly_deductions() >= 4 AS deducted;
SELECT type, status, usage_hour, amount, uncollected, description FROM credits.transactions
 WHERE project_id = 7003 ORDER BY usage_hour NULLS FIRST, resource_id COLLATE "C";
SELECT resource_id, state, state_since FROM credits.resource_overview WHERE project_id = 7003;
SELECT current_balance, accumulating, available_balance FROM credits.balance_overview WHERE project_id = 7003;
SELECT * FROM credits.verify(7003);
SET credits.clock = '2026-03-01 13:45+00';

--
-- 3. SQL injection and odd characters in every text argument are plain text: stored and
--    returned exactly, or refused by length; nothing else happens.
--
CREATE TEMP TABLE evil (n serial, s text);
INSERT INTO evil (s) VALUES
    ('x''); DROP TABLE credits.accounts; --'),
    ('x"; DROP SCHEMA credits CASCADE; --'),
    ('$$; TRUNCATE credits.transactions; $$'),
    ('%s %I %L %% \ \\ '''''),
    (E'tab\there\nnewline \u00e9\u00e8 \U0001F4B3'),
    (repeat(U&'\00e9', 200)),          -- 200 characters, 400 bytes: taken
    (' ');
SELECT n, length(s) AS chars, octet_length(s) AS bytes FROM evil ORDER BY n;
SELECT n, pg_temp.fails(format('SELECT credits.add_payment_method(7002, %L, %L, %L)', s, s, n = 1)) AS method,
       pg_temp.fails(format('SELECT credits.start_instance(7000, %L, ''0.01'')', s)) AS instance,
       pg_temp.fails(format('SELECT credits.record_usage(7000, %L, ''0.01'', %L)', s, s)) AS usage
  FROM evil ORDER BY n;
SELECT e.n, m.provider_ref = e.s AS provider_ref_exact, m.label = e.s AS label_exact
  FROM evil e LEFT JOIN credits.payment_methods m ON m.project_id = 7002 AND m.provider_ref = e.s ORDER BY e.n;
SELECT e.n, r.resource_id = e.s AS resource_exact, r.state, k.idempotency_key = e.s AS key_exact
  FROM evil e LEFT JOIN credits.resources r ON r.project_id = 7000 AND r.resource_id = e.s
  LEFT JOIN credits.usage_keys k ON k.project_id = 7000 AND k.idempotency_key = e.s ORDER BY e.n;
-- deposits: keys, invoice URLs and failure reasons
SELECT e.n, pg_temp.fails(format('SELECT credits.add_credits(7002, ''5'', NULL, %L)', e.s)) AS added
  FROM evil e ORDER BY e.n;
SELECT e.n, pg_temp.fails(format('SELECT credits.%s(7002, %s, %L)',
                                 CASE WHEN e.n <= 4 THEN 'complete_deposit' ELSE 'fail_deposit' END, t.transaction_id, e.s)) AS settled
  FROM evil e JOIN credits.transactions t ON t.project_id = 7002 AND t.idempotency_key = e.s ORDER BY e.n;
SELECT e.n, t.status, t.idempotency_key = e.s AS key_exact, coalesce(t.invoice_url, t.failure_reason) = e.s AS text_exact,
       t.description = 'Deposit (' || m.label || ')' AS description_exact,
       v.payload->>'provider_ref' = m.provider_ref AS payload_exact
  FROM evil e JOIN credits.transactions t ON t.project_id = 7002 AND t.idempotency_key = e.s
  JOIN credits.payment_methods m ON m.method_id = t.method_id
  JOIN credits.events v ON v.transaction_id = t.transaction_id AND v.kind = 'charge_requested' ORDER BY e.n;
-- the views read them as text
SELECT count(*) AS history_rows FROM credits.transaction_history WHERE project_id IN (7000, 7002);
SELECT count(*) AS resources FROM credits.resource_overview WHERE project_id = 7000;
-- nothing was dropped or emptied
SELECT to_regclass('credits.accounts') IS NOT NULL AS accounts, to_regclass('credits.transactions') IS NOT NULL AS transactions,
       (SELECT count(*) FROM credits.accounts WHERE project_id BETWEEN 7000 AND 7099) AS my_accounts,
       (SELECT count(*) FROM credits.transactions WHERE project_id BETWEEN 7000 AND 7099) AS my_transactions;
SELECT * FROM credits.verify() WHERE project_id BETWEEN 7000 AND 7099;
RESET credits.clock;
