\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/ledger_helpers.sql
\set ECHO all
--
-- Accounts and payment methods (README "Accounts and payment methods"): open_account,
-- add_payment_method, set_default_payment_method, remove_payment_method.
-- Projects 4001-4099.
--
SET credits.clock = '2026-03-01 09:00+00';

--
-- open_account opens the account at balance zero and is idempotent.
--
SELECT credits.open_account(4001);
SELECT project_id, balance, depleted, opened_at FROM credits.accounts WHERE project_id = 4001;
SELECT * FROM credits.balance_overview WHERE project_id = 4001;
SELECT pg_temp.ledger_state() AS before \gset
SET credits.clock = '2026-03-01 10:00+00';
SELECT credits.open_account(4001);
-- nothing written: the account keeps its opening time
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT opened_at FROM credits.accounts WHERE project_id = 4001;
SELECT pg_temp.refused('SELECT credits.open_account(NULL)');
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;

--
-- add_payment_method: returns the method id; the first one added becomes the default.
--
SELECT pg_temp.keep('method', 'VISA', credits.add_payment_method(4001, 'pm_visa_4242', 'Visa ending 4242')) AS visa \gset
SELECT pg_temp.n('method', method_id) AS method, provider_ref, label, is_default, added_at, removed_at
  FROM credits.payment_methods WHERE project_id = 4001 ORDER BY method_id;
-- make_default => false adds a method and leaves the default alone
SELECT pg_temp.keep('method', 'MC', credits.add_payment_method(4001, 'pm_mc_5555', 'Mastercard ending 5555',
                                                               make_default => false)) AS mc \gset
-- a method without a label
SELECT pg_temp.keep('method', 'SEPA', credits.add_payment_method(4001, 'pm_sepa_de89', make_default => false)) AS sepa \gset
SELECT pg_temp.n('method', method_id) AS method, provider_ref, label, is_default
  FROM credits.payment_methods WHERE project_id = 4001 ORDER BY method_id;

-- Adding the same provider_ref again (a retried call) returns the same method and writes
-- nothing; the label of the retry is not applied.
SELECT pg_temp.ledger_state() AS before \gset
SELECT credits.add_payment_method(4001, 'pm_mc_5555', 'Mastercard ending 5555', make_default => false) = :mc AS same_method;
SELECT credits.add_payment_method(4001, 'pm_mc_5555', 'another label', make_default => false) = :mc AS same_method;
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT label, is_default FROM credits.payment_methods WHERE method_id = :mc;
-- ... and with make_default (the default value) the retry makes it the default
SELECT credits.add_payment_method(4001, 'pm_mc_5555') = :mc AS same_method;
SELECT pg_temp.n('method', method_id) AS method, is_default
  FROM credits.payment_methods WHERE project_id = 4001 ORDER BY method_id;
SELECT pg_temp.ledger_state() = :'before' AS same_row_counts;

-- The same provider_ref in another project is another method.
SELECT credits.open_account(4002);
SELECT pg_temp.keep('method', 'VISA2', credits.add_payment_method(4002, 'pm_visa_4242', 'Visa ending 4242')) AS visa2 \gset
SELECT :visa2 <> :visa AS other_method;
SELECT project_id, pg_temp.n('method', method_id) AS method, is_default
  FROM credits.payment_methods WHERE project_id IN (4001, 4002) AND provider_ref = 'pm_visa_4242' ORDER BY 1;

-- Bad input: refused with its SQLSTATE, nothing written.
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused('SELECT credits.add_payment_method(4099, ''pm_x'')');                 -- unknown project
SELECT pg_temp.refused('SELECT credits.add_payment_method(NULL, ''pm_x'')');
SELECT pg_temp.refused('SELECT credits.add_payment_method(4001, NULL)');
SELECT pg_temp.refused('SELECT credits.add_payment_method(4001, '''')');
SELECT pg_temp.refused(format('SELECT credits.add_payment_method(4001, %L)', repeat('x', 201)));
SELECT pg_temp.refused(format('SELECT credits.add_payment_method(4001, ''pm_x'', %L)', repeat('x', 201)));
SELECT pg_temp.refused('SELECT credits.add_payment_method(4001, ''pm_x'', '''')');
SELECT pg_temp.refused('SELECT credits.add_payment_method(4001, ''pm_x'', make_default => NULL)');
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
-- the longest provider_ref and label are accepted
SELECT credits.add_payment_method(4002, repeat('r', 200), repeat('l', 200), make_default => false) > 0 AS added;

--
-- set_default_payment_method: exactly one default per project.
--
SELECT credits.set_default_payment_method(4001, :sepa);
SELECT pg_temp.n('method', method_id) AS method, is_default
  FROM credits.payment_methods WHERE project_id = 4001 ORDER BY method_id;
-- setting the default again changes nothing
SELECT pg_temp.ledger_state() AS before \gset
SELECT credits.set_default_payment_method(4001, :sepa);
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT pg_temp.refused(format('SELECT credits.set_default_payment_method(4001, %s)', :visa2)); -- other project's
SELECT pg_temp.refused(format('SELECT credits.set_default_payment_method(4002, %s)', :visa));  -- other project's
SELECT pg_temp.refused('SELECT credits.set_default_payment_method(4001, -1)');                 -- unknown method
SELECT pg_temp.refused(format('SELECT credits.set_default_payment_method(4099, %s)', :visa));  -- unknown project
SELECT pg_temp.refused('SELECT credits.set_default_payment_method(4001, NULL)');
SELECT pg_temp.refused(format('SELECT credits.set_default_payment_method(NULL, %s)', :visa));
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT pg_temp.n('method', method_id) AS method, is_default
  FROM credits.payment_methods WHERE project_id = 4001 ORDER BY method_id;

--
-- remove_payment_method: the method stays in history, removed; a removed default leaves the
-- project without a default.
--
SET credits.clock = '2026-03-01 11:00+00';
SELECT credits.remove_payment_method(4001, :mc);
SELECT credits.remove_payment_method(4001, :sepa);
SELECT pg_temp.n('method', method_id) AS method, is_default, removed_at
  FROM credits.payment_methods WHERE project_id = 4001 ORDER BY method_id;
SELECT count(*) AS defaults FROM credits.payment_methods WHERE project_id = 4001 AND is_default;
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused(format('SELECT credits.remove_payment_method(4001, %s)', :mc));          -- removed already
SELECT pg_temp.refused(format('SELECT credits.set_default_payment_method(4001, %s)', :mc));     -- removed
SELECT pg_temp.refused(format('SELECT credits.remove_payment_method(4001, %s)', :visa2));       -- other project's
SELECT pg_temp.refused(format('SELECT credits.remove_payment_method(4099, %s)', :visa));        -- unknown project
SELECT pg_temp.refused('SELECT credits.remove_payment_method(4001, NULL)');
SELECT pg_temp.refused(format('SELECT credits.remove_payment_method(NULL, %s)', :visa));
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
-- Adding a removed provider_ref again makes a new method.
SELECT pg_temp.keep('method', 'MC_AGAIN', credits.add_payment_method(4001, 'pm_mc_5555', 'Mastercard ending 5555')) AS mc_again \gset
SELECT :mc_again <> :mc AS new_method;
SELECT pg_temp.n('method', method_id) AS method, provider_ref, is_default, removed_at IS NOT NULL AS removed
  FROM credits.payment_methods WHERE project_id = 4001 ORDER BY method_id;

-- A method that auto-recharge is set to charge cannot be removed; once auto-recharge uses
-- another method it can.
SELECT credits.configure_auto_recharge(4001, true, '10.00', '20.00', :visa);
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused(format('SELECT credits.remove_payment_method(4001, %s)', :visa));
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT credits.configure_auto_recharge(4001, false, '10.00', '20.00', :visa);
SELECT credits.remove_payment_method(4001, :visa);
SELECT pg_temp.n('method', method_id) AS method, is_default, removed_at IS NOT NULL AS removed
  FROM credits.payment_methods WHERE project_id = 4001 ORDER BY method_id;

-- The billing page chooses among a project's methods through payment_method_overview, which
-- a reader may read: every method ever added, the default, and the removed ones marked.
SET ROLE credits_reader;
CREATE TEMP TABLE methods_seen AS SELECT * FROM credits.payment_method_overview WHERE project_id = 4001;
SELECT count(*) AS rows_of_4002 FROM credits.payment_method_overview WHERE project_id = 4002;
RESET ROLE;
SELECT pg_temp.n('method', method_id) AS method, provider_ref, label, is_default, removed
  FROM methods_seen ORDER BY method_id;

-- Project ids are positive: zero and negative ids are refused (22023) and open nothing.
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused('SELECT credits.open_account(0)');
SELECT pg_temp.refused('SELECT credits.open_account(-42)');
SELECT pg_temp.refused('SELECT credits.open_account(-9223372036854775808)');
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT credits.open_account(9223372036854775807);   -- the largest bigint is a project id
SELECT count(*) AS opened FROM credits.accounts WHERE project_id = 9223372036854775807;

-- At most one default per project, in every project.
SELECT project_id, count(*) FROM credits.payment_methods WHERE is_default GROUP BY 1 HAVING count(*) > 1;

-- Every invariant holds.
SELECT * FROM credits.verify();
