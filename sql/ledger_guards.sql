\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/ledger_helpers.sql
\set ECHO all
--
-- What the database itself refuses, whoever writes (README "Roles and safety": completed
-- transactions are immutable; "the database itself refuses a negative balance").  This
-- session is a superuser and owns the tables, so no privilege stands in the way: only the
-- trigger transactions_guard and the constraints do.  Projects 4300-4399.
--
SET credits.clock = '2026-03-04 08:00+00';
-- (the first refusal below shows the whole message, the others only its first line)
SELECT rolsuper AS superuser,
       current_user = (SELECT tableowner FROM pg_tables
                        WHERE schemaname = 'credits' AND tablename = 'transactions') AS owns_transactions
  FROM pg_roles WHERE rolname = current_user;
SELECT credits.open_account(4301);
SELECT pg_temp.keep('method', 'VISA', credits.add_payment_method(4301, 'pm_visa_4301')) AS visa \gset
SELECT pg_temp.keep('transaction', 'C', credits.add_credits(4301, '50.00')) AS c \gset
SELECT credits.complete_deposit(4301, :c, 'https://pay.example/in_c');
SELECT pg_temp.keep('transaction', 'F', credits.add_credits(4301, '60.00')) AS f \gset
SELECT credits.fail_deposit(4301, :f, 'card_declined');
SELECT pg_temp.keep('transaction', 'P', credits.add_credits(4301, '70.00', idempotency_key => 'guard-p')) AS p \gset
SELECT credits.open_account(4302);

--
-- A completed transaction never changes, in any column; a failed one neither.
--
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused(format('UPDATE credits.transactions SET amount = ''5000.00'' WHERE transaction_id = %s', :c));
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET amount = ''0.01'' WHERE transaction_id = %s', :c));
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET status = ''pending'', completed_at = NULL WHERE transaction_id = %s', :c));
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET status = ''failed'', completed_at = NULL, failed_at = now() WHERE transaction_id = %s', :c));
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET project_id = 4302 WHERE transaction_id = %s', :c));
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET type = ''auto_recharge'' WHERE transaction_id = %s', :c));
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET description = ''Gift'', invoice_url = NULL WHERE transaction_id = %s', :c));
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET created_at = created_at - interval ''1 year'' WHERE transaction_id = %s', :c));
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET status = ''completed'', failed_at = NULL, completed_at = now() WHERE transaction_id = %s', :f));
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET status = ''pending'', failed_at = NULL WHERE transaction_id = %s', :f));
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET failure_reason = NULL WHERE transaction_id = %s', :f));
-- a statement that touches many rows is refused as a whole
SELECT pg_temp.refused_brief('UPDATE credits.transactions SET description = description || '' '' WHERE project_id = 4301');
-- A pending deposit may only move to completed or failed; its amount, type and project are fixed.
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET amount = ''700.00'' WHERE transaction_id = %s', :p));
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET project_id = 4302 WHERE transaction_id = %s', :p));
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET type = ''auto_recharge'' WHERE transaction_id = %s', :p));
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET status = ''accumulating'' WHERE transaction_id = %s', :p));
-- Transactions are never deleted, whatever their status; nor truncated.
SELECT pg_temp.refused(format('DELETE FROM credits.transactions WHERE transaction_id = %s', :c));
SELECT pg_temp.refused(format('DELETE FROM credits.transactions WHERE transaction_id = %s', :f));
SELECT pg_temp.refused(format('DELETE FROM credits.transactions WHERE transaction_id = %s', :p));
SELECT pg_temp.refused('DELETE FROM credits.transactions WHERE project_id = 4301');
SELECT pg_temp.refused('TRUNCATE credits.transactions');
SELECT pg_temp.refused('TRUNCATE credits.accounts CASCADE');
-- accounts and payment methods are never deleted either: the ledger refers to them
SELECT pg_temp.refused('DELETE FROM credits.accounts WHERE project_id = 4302');
SELECT pg_temp.refused(format('DELETE FROM credits.payment_methods WHERE method_id = %s', :visa));
SELECT pg_temp.refused('TRUNCATE credits.payment_methods CASCADE');
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT pg_temp.n('transaction', transaction_id) AS id, project_id, type, status, amount, description,
       invoice_url, failure_reason
  FROM credits.transactions WHERE project_id IN (4301, 4302) ORDER BY transaction_id;

--
-- Usage: accumulating → completed is the only move; a completed hour is final.
--
SELECT credits.start_instance(4301, 'cpu-small-1', '0.36');
SET credits.clock = '2026-03-04 08:10+00';
SELECT credits.stop_instance(4301, 'cpu-small-1');
SELECT pg_temp.keep('transaction', 'U', transaction_id) AS u
  FROM credits.transactions WHERE project_id = 4301 AND type = 'usage' \gset
SELECT pg_temp.n('transaction', transaction_id) AS id, status, amount, usage_hour, accrued_units
  FROM credits.transactions WHERE transaction_id = :u;
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET status = ''pending'' WHERE transaction_id = %s', :u));
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET status = ''failed'', failed_at = now() WHERE transaction_id = %s', :u));
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET resource_id = ''other'' WHERE transaction_id = %s', :u));
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET usage_hour = usage_hour + interval ''1 hour'' WHERE transaction_id = %s', :u));
SELECT pg_temp.refused(format('DELETE FROM credits.transactions WHERE transaction_id = %s', :u));
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
-- (in a transaction rolled back below: what a deduction does, and that it is then final)
BEGIN;
UPDATE credits.transactions SET status = 'completed', completed_at = '2026-03-04 09:00+00'
 WHERE transaction_id = :u;
UPDATE credits.accounts SET balance = balance - '0.06', deducted_from = '2026-03-04 08:00+00',
                            deducted_until = '2026-03-04 09:00+00' WHERE project_id = 4301;
UPDATE credits.credit_lots SET remaining = remaining - '0.06', used = used + '0.06'
 WHERE transaction_id = (SELECT min(l.transaction_id) FROM credits.credit_lots l WHERE l.project_id = 4301);
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET amount = ''-0.01'', accrued_units = 0 WHERE transaction_id = %s', :u));
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET uncollected = ''0.06'' WHERE transaction_id = %s', :u));
SELECT pg_temp.refused_brief(format('UPDATE credits.transactions SET status = ''accumulating'', completed_at = NULL WHERE transaction_id = %s', :u));
SELECT pg_temp.refused(format('DELETE FROM credits.transactions WHERE transaction_id = %s', :u));
SELECT pg_temp.n('transaction', transaction_id) AS id, status, amount FROM credits.transactions WHERE transaction_id = :u;
SELECT * FROM credits.verify(4301);
ROLLBACK;

--
-- A balance is never negative (CHECK balance_not_negative).
--
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused('UPDATE credits.accounts SET balance = ''-0.000001'' WHERE project_id = 4301');
SELECT pg_temp.refused('UPDATE credits.accounts SET balance = balance - ''50.000001'' WHERE project_id = 4301');
SELECT pg_temp.refused('INSERT INTO credits.accounts (project_id, balance, opened_at) VALUES (4303, ''-1'', credits.now())');
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;

--
-- The other rules the tables keep.
--
-- (a pending auto-recharge, written directly, to try a second one against)
INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, method_id)
VALUES (4302, 'auto_recharge', 'pending', '5', now(), 'Auto-recharge', NULL);
SELECT pg_temp.ledger_state() AS before \gset
-- one pending auto-recharge per project
SELECT pg_temp.refused_brief('INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, method_id) VALUES (4302, ''auto_recharge'', ''pending'', ''5'', now(), ''Auto-recharge'', NULL)');
-- a second default payment method
SELECT pg_temp.refused_brief(format('INSERT INTO credits.payment_methods (project_id, provider_ref, is_default, added_at) VALUES (4301, %L, true, now())', 'pm_second_default'));
-- an idempotency key used twice in a project
SELECT pg_temp.refused_brief(format('INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, method_id, idempotency_key) VALUES (4301, ''deposit'', ''pending'', ''5'', now(), ''x'', %s, ''guard-p'')', :visa));
-- deposits are positive; usage is not
SELECT pg_temp.refused_brief(format('INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, method_id) VALUES (4301, ''deposit'', ''pending'', ''-5'', now(), ''x'', %s)', :visa));
SELECT pg_temp.refused_brief('INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, resource_id, usage_hour, accrued_units) VALUES (4301, ''usage'', ''accumulating'', ''5'', now(), ''x'', ''r'', ''2026-03-04 08:00+00'', 0)');
-- a usage hour is a whole UTC hour (history and verify() find usage rows hour by hour)
SELECT pg_temp.refused_brief('INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, resource_id, usage_hour, accrued_units) VALUES (4301, ''usage'', ''accumulating'', ''0'', now(), ''x'', ''r'', ''2026-03-04 08:30+00'', 0)');
-- status and its times go together
SELECT pg_temp.refused_brief(format('INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, method_id) VALUES (4301, ''deposit'', ''completed'', ''5'', now(), ''x'', %s)', :visa));
-- one usage transaction per (project, resource, hour)
SELECT pg_temp.refused_brief(format('INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, resource_id, usage_hour, accrued_units) VALUES (4301, ''usage'', ''accumulating'', ''0'', now(), ''x'', ''cpu-small-1'', ''2026-03-04 08:00+00'', 0)'));
-- transactions of unknown projects or on another project's payment method (checked once per
-- statement: one bad row refuses the whole statement), events of unknown kinds
SELECT pg_temp.refused_brief('INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description) VALUES (4399, ''deposit'', ''pending'', ''5'', now(), ''x'')');
SELECT pg_temp.refused_brief(format('INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, method_id) VALUES (4301, ''deposit'', ''pending'', ''5'', now(), ''x'', %s), (4302, ''deposit'', ''pending'', ''5'', now(), ''x'', %s)', :visa, :visa));
SELECT pg_temp.refused_brief('INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, method_id) VALUES (4301, ''deposit'', ''pending'', ''5'', now(), ''x'', 987654321)');
SELECT pg_temp.refused_brief('INSERT INTO credits.events (project_id, kind, payload, created_at) VALUES (4301, ''refund_sent'', ''{}'', now())');
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT credits.fail_deposit(4302, transaction_id) FROM credits.transactions WHERE project_id = 4302;

-- Every invariant holds.
SELECT credits.fail_deposit(4301, :p);
SELECT * FROM credits.verify();
