\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/ledger_helpers.sql
\set ECHO all
--
-- verify() (README "What users read"): no rows while every invariant holds, one row per broken
-- invariant otherwise.  Each invariant is broken below as only a superuser can (switching off
-- the trigger, constraint or index that keeps it) inside a transaction that is rolled back.
-- Projects 4400-4499.
--
SET credits.clock = '2026-03-05 10:00+00';
SELECT credits.open_account(4401);
SELECT pg_temp.keep('method', 'VISA', credits.add_payment_method(4401, 'pm_visa_4401')) AS visa \gset
SELECT pg_temp.keep('transaction', 'A', credits.add_credits(4401, '25.00')) AS a \gset
SELECT credits.complete_deposit(4401, :a);
SELECT pg_temp.keep('transaction', 'B', credits.add_credits(4401, '10.00')) AS b \gset
SELECT credits.complete_deposit(4401, :b);
SELECT pg_temp.keep('transaction', 'F', credits.add_credits(4401, '40.00')) AS f \gset
SELECT credits.fail_deposit(4401, :f);
SELECT pg_temp.keep('transaction', 'P', credits.add_credits(4401, '50.00')) AS p \gset
SELECT credits.start_instance(4401, 'gpu-1', '2.00');
SET credits.clock = '2026-03-05 10:15+00';
SELECT credits.stop_instance(4401, 'gpu-1');
SELECT pg_temp.keep('transaction', 'U', transaction_id) AS u
  FROM credits.transactions WHERE project_id = 4401 AND type = 'usage' \gset
SELECT credits.open_account(4402);
SELECT credits.add_payment_method(4402, 'pm_visa_4402') > 0 AS added;
SELECT pg_temp.keep('transaction', 'Q', credits.add_credits(4402, '5.00')) AS q \gset
SELECT credits.complete_deposit(4402, :q);
SELECT credits.start_instance(4402, 'cpu-1', '0.10');
SELECT pg_temp.n('transaction', transaction_id) AS id, project_id, type, status, amount
  FROM credits.transactions WHERE project_id IN (4401, 4402) ORDER BY transaction_id;
SELECT project_id, balance FROM credits.accounts WHERE project_id IN (4401, 4402) ORDER BY 1;

-- All is well: no rows, for all projects and for each.
SELECT * FROM credits.verify();
SELECT * FROM credits.verify(4401);
SELECT * FROM credits.verify(4402);
-- an unknown project is an error, not a clean bill of health
SELECT pg_temp.refused('SELECT * FROM credits.verify(4499)');

--
-- A balance that differs from the sum of its completed transactions.
--
BEGIN;
UPDATE credits.accounts SET balance = balance + '1.00' WHERE project_id = 4401;
SELECT * FROM credits.verify();
-- verify(project) reports that project only
SELECT * FROM credits.verify(4401);
SELECT * FROM credits.verify(4402);
ROLLBACK;

-- A completed deposit turned back into a failed one (transactions_guard switched off): the
-- balance no longer matches.
BEGIN;
ALTER TABLE credits.transactions DISABLE TRIGGER transactions_guard;
UPDATE credits.transactions SET status = 'failed', completed_at = NULL, failed_at = credits.now()
 WHERE transaction_id = :b;
SELECT pg_temp.masked(problem) AS problem, project_id FROM credits.verify();
ROLLBACK;

-- A pending deposit marked completed directly, without raising the balance: the guard lets the
-- move pass (it is a legal one), verify() sees the balance it should have caused.
BEGIN;
UPDATE credits.transactions SET status = 'completed', completed_at = credits.now() WHERE transaction_id = :p;
SELECT pg_temp.masked(problem) AS problem, project_id FROM credits.verify();
ROLLBACK;

--
-- A negative balance (CHECK balance_not_negative dropped).
--
BEGIN;
ALTER TABLE credits.accounts DROP CONSTRAINT balance_not_negative;
UPDATE credits.accounts SET balance = '-5.00' WHERE project_id = 4401;
SELECT * FROM credits.verify();
ROLLBACK;

--
-- A transaction of no account, and a deposit on another project's payment method (the
-- statement trigger transactions_known_references disabled).
--
BEGIN;
ALTER TABLE credits.transactions DISABLE TRIGGER transactions_known_references, DISABLE TRIGGER transactions_guard;
INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description)
VALUES (4499, 'deposit', 'pending', '5', now(), 'x');
UPDATE credits.transactions SET method_id = :visa WHERE project_id = 4402 AND transaction_id = :q;
SELECT project_id, regexp_replace(problem, '\d+', '#', 'g') AS problem FROM credits.verify();
ROLLBACK;

--
-- A resource charged twice for one hour (unique index transactions_one_usage_per_hour dropped).
--
BEGIN;
DROP INDEX credits.transactions_one_usage_per_hour;
INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, resource_id,
                                  usage_hour, accrued_units)
SELECT project_id, type, status, amount, created_at, description, resource_id, usage_hour, accrued_units
  FROM credits.transactions WHERE transaction_id = :u;
SELECT * FROM credits.verify();
-- (and for that project alone, whose usage rows are read hour by hour)
SELECT * FROM credits.verify((SELECT project_id FROM credits.transactions WHERE transaction_id = :u));
ROLLBACK;

--
-- Illegal transactions: a status its times contradict (CHECK status_times dropped), a usage
-- amount that is not what its accrued units are worth, a usage hour completed before it ended,
-- an uncollected part on a deposit (CHECK usage_shape dropped), a deposit marked accumulating.
--
BEGIN;
ALTER TABLE credits.transactions DISABLE TRIGGER transactions_guard;
ALTER TABLE credits.transactions DROP CONSTRAINT status_times, DROP CONSTRAINT usage_shape;
UPDATE credits.transactions SET status = 'pending' WHERE transaction_id = :a;
UPDATE credits.transactions SET status = 'accumulating' WHERE transaction_id = :p;
UPDATE credits.transactions SET uncollected = '7.00' WHERE transaction_id = :q;
SELECT pg_temp.masked(problem) AS problem, project_id FROM credits.verify() ORDER BY project_id, problem;
ROLLBACK;
BEGIN;
-- (legal moves, so with every guard in place)
UPDATE credits.transactions SET amount = '-0.49' WHERE transaction_id = :u;
SELECT pg_temp.masked(problem) AS problem, project_id FROM credits.verify();
ROLLBACK;
-- Completes project 4401's usage transaction tx (0.50) by hand at completed_at, debiting the
-- balance and its lot and setting the project's deducted hours to [from_hour, until_hour).
CREATE FUNCTION pg_temp.complete_by_hand(tx bigint, completed_at timestamptz, from_hour timestamptz,
                                         until_hour timestamptz) RETURNS void LANGUAGE sql AS $$
    UPDATE credits.transactions SET status = 'completed', completed_at = $2 WHERE transaction_id = tx;
    UPDATE credits.accounts SET balance = balance - '0.50', deducted_from = from_hour, deducted_until = until_hour
     WHERE project_id = 4401;
    -- (and its oldest lot, as the deduction draws)
    UPDATE credits.credit_lots SET remaining = remaining - '0.50', used = used + '0.50'
     WHERE transaction_id = (SELECT min(l.transaction_id) FROM credits.credit_lots l
                              WHERE l.project_id = 4401 AND l.remaining >= '0.50');
$$;
BEGIN;
SELECT FROM pg_temp.complete_by_hand(:u, '2026-03-05 10:30+00', '2026-03-05 10:00+00', '2026-03-05 11:00+00');
SELECT pg_temp.masked(problem) AS problem, project_id FROM credits.verify();
ROLLBACK;
--
-- A completed hour outside its project's deducted hours, [deducted_from, deducted_until),
-- over which one project's usage is read: verify() finds it; verify(4401) finds its amount
-- missing from the sum.
--
BEGIN;
SELECT FROM pg_temp.complete_by_hand(:u, '2026-03-05 11:00+00', '2026-03-05 11:00+00', '2026-03-05 12:00+00');
SELECT pg_temp.masked(problem) AS problem, project_id FROM credits.verify();
SELECT pg_temp.masked(problem) AS problem, project_id FROM credits.verify(4401);
ROLLBACK;
-- (and in a project never deducted)
BEGIN;
SELECT FROM pg_temp.complete_by_hand(:u, '2026-03-05 11:00+00', NULL, '-infinity');
SELECT pg_temp.masked(problem) AS problem, project_id FROM credits.verify();
ROLLBACK;
--
-- API usage rolled up for an hour that is already completed: the next deduction would charge
-- it again.
--
BEGIN;
SELECT FROM pg_temp.complete_by_hand(:u, '2026-03-05 11:00+00', '2026-03-05 10:00+00', '2026-03-05 11:00+00');
INSERT INTO credits.usage_rollup SELECT project_id, resource_id, usage_hour, 3600000000
  FROM credits.transactions WHERE transaction_id = :u;
SELECT pg_temp.masked(problem) AS problem, project_id FROM credits.verify();
SELECT pg_temp.masked(problem) AS problem, project_id FROM credits.verify(4401);
ROLLBACK;

--
-- A project at zero balance whose instance still runs (the zero-balance trigger switched off).
--
BEGIN;
ALTER TABLE credits.accounts DISABLE TRIGGER zero_balance_decide;
UPDATE credits.accounts SET balance = '0' WHERE project_id = 4402;
SELECT * FROM credits.verify();
ROLLBACK;

--
-- Two pending auto-recharges (unique index transactions_one_pending_auto_recharge dropped).
--
BEGIN;
DROP INDEX credits.transactions_one_pending_auto_recharge;
INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, method_id)
SELECT 4402, 'auto_recharge', 'pending', '5', credits.now(), 'Auto-recharge', NULL
  FROM generate_series(1, 2);
SELECT * FROM credits.verify();
ROLLBACK;

-- Everything rolled back: all is well again.
SELECT credits.fail_deposit(4401, :p);
SELECT credits.stop_instance(4402, 'cpu-1');
SELECT * FROM credits.verify();
