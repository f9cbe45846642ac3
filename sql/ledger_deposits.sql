\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/ledger_helpers.sql
\set ECHO all
--
-- Deposits (README "Deposits"): add_credits, complete_deposit, fail_deposit, the minimum
-- deposit, idempotency keys.  Projects 4100-4199.
--
SET credits.clock = '2026-03-02 08:00+00';
SELECT credits.open_account(4101);
SELECT pg_temp.keep('method', 'VISA', credits.add_payment_method(4101, 'pm_visa', 'Visa ending 4242')) AS visa \gset
SELECT pg_temp.keep('method', 'MC', credits.add_payment_method(4101, 'pm_mc', make_default => false)) AS mc \gset
SELECT credits.open_account(4102);   -- another project, with no payment method

--
-- add_credits records a pending deposit on the default method and queues charge_requested;
-- the balance does not move yet.
--
SELECT pg_temp.keep('transaction', 'D1', credits.add_credits(4101, '25.00')) AS d1 \gset
SELECT pg_temp.n('transaction', transaction_id) AS id, type, status, amount, uncollected, created_at,
       description, pg_temp.n('method', method_id) AS method, idempotency_key, invoice_url,
       failure_reason, completed_at, failed_at
  FROM credits.transactions WHERE project_id = 4101 ORDER BY transaction_id;
SELECT kind, resource_id, pg_temp.n('transaction', transaction_id) AS transaction, created_at,
       claimed_until, claims, acked_at,
       payload - 'transaction_id' - 'method_id' AS payload,
       (payload->>'transaction_id')::bigint = :d1 AS payload_names_d1,
       (payload->>'method_id')::bigint = :visa AS payload_names_visa
  FROM credits.events WHERE project_id = 4101 ORDER BY event_id;
SELECT balance FROM credits.accounts WHERE project_id = 4101;
SELECT pg_temp.n('transaction', transaction_id) AS id, project_id, date, type, description, invoice_url,
       amount, status, uncollected
  FROM credits.transaction_history WHERE project_id = 4101;

--
-- complete_deposit: pending → completed, the balance rises in the same transaction, and the
-- new balance is returned.
--
SET credits.clock = '2026-03-02 08:01:30+00';
SELECT credits.complete_deposit(4101, :d1, 'https://pay.example/invoices/in_001');
SELECT pg_temp.n('transaction', transaction_id) AS id, status, amount, invoice_url, completed_at, failed_at
  FROM credits.transactions WHERE transaction_id = :d1;
SELECT balance FROM credits.accounts WHERE project_id = 4101;
SELECT * FROM credits.balance_overview WHERE project_id = 4101;

-- An explicit method; and a deposit completed without an invoice link.
SELECT pg_temp.keep('transaction', 'D2', credits.add_credits(4101, '10.50', :mc)) AS d2 \gset
SELECT credits.complete_deposit(4101, :d2);
SELECT pg_temp.n('transaction', transaction_id) AS id, status, amount, description,
       pg_temp.n('method', method_id) AS method, invoice_url
  FROM credits.transactions WHERE transaction_id = :d2;
SELECT balance FROM credits.accounts WHERE project_id = 4101;

--
-- fail_deposit: pending → failed, with the provider's reason; the balance does not move.
--
SET credits.clock = '2026-03-02 09:00+00';
SELECT pg_temp.keep('transaction', 'D3', credits.add_credits(4101, '100')) AS d3 \gset
SELECT credits.fail_deposit(4101, :d3, 'card_declined: insufficient funds');
SELECT pg_temp.n('transaction', transaction_id) AS id, status, amount, failure_reason, completed_at, failed_at
  FROM credits.transactions WHERE transaction_id = :d3;
SELECT pg_temp.keep('transaction', 'D4', credits.add_credits(4101, '7')) AS d4 \gset
SELECT credits.fail_deposit(4101, :d4);   -- no reason given
SELECT pg_temp.n('transaction', transaction_id) AS id, status, failure_reason, failed_at
  FROM credits.transactions WHERE transaction_id = :d4;
SELECT balance FROM credits.accounts WHERE project_id = 4101;

--
-- No other transition exists: each is refused with its SQLSTATE and changes nothing.
--
SELECT pg_temp.keep('transaction', 'D5', credits.add_credits(4101, '5.00')) AS d5 \gset
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused(format('SELECT credits.complete_deposit(4101, %s)', :d1));   -- complete twice
SELECT pg_temp.refused(format('SELECT credits.fail_deposit(4101, %s)', :d1));       -- fail a completed one
SELECT pg_temp.refused(format('SELECT credits.complete_deposit(4101, %s)', :d3));   -- complete a failed one
SELECT pg_temp.refused(format('SELECT credits.fail_deposit(4101, %s)', :d3));       -- fail twice
-- a deposit of another project, or of no project
SELECT pg_temp.refused(format('SELECT credits.complete_deposit(4102, %s)', :d5));
SELECT pg_temp.refused(format('SELECT credits.fail_deposit(4102, %s)', :d5));
SELECT pg_temp.refused(format('SELECT credits.complete_deposit(4199, %s)', :d5));
SELECT pg_temp.refused(format('SELECT credits.fail_deposit(4199, %s)', :d5));
SELECT pg_temp.refused('SELECT credits.complete_deposit(4101, -1)');
SELECT pg_temp.refused('SELECT credits.fail_deposit(4101, -1)');
-- bad arguments
SELECT pg_temp.refused(format('SELECT credits.complete_deposit(NULL, %s)', :d5));
SELECT pg_temp.refused('SELECT credits.complete_deposit(4101, NULL)');
SELECT pg_temp.refused(format('SELECT credits.complete_deposit(4101, %s, '''')', :d5));
SELECT pg_temp.refused(format('SELECT credits.complete_deposit(4101, %s, %L)', :d5, repeat('u', 2049)));
SELECT pg_temp.refused(format('SELECT credits.fail_deposit(NULL, %s)', :d5));
SELECT pg_temp.refused('SELECT credits.fail_deposit(4101, NULL)');
SELECT pg_temp.refused(format('SELECT credits.fail_deposit(4101, %s, '''')', :d5));
SELECT pg_temp.refused(format('SELECT credits.fail_deposit(4101, %s, %L)', :d5, repeat('r', 2001)));
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT pg_temp.n('transaction', transaction_id) AS id, status, amount, invoice_url, failure_reason
  FROM credits.transactions WHERE project_id = 4101 ORDER BY transaction_id;
-- D5 is still pending and completes normally; the longest invoice link is accepted.
SELECT credits.complete_deposit(4101, :d5, repeat('u', 2048));
SELECT length(invoice_url) FROM credits.transactions WHERE transaction_id = :d5;

-- A usage transaction is not a deposit: neither function touches it.
SELECT credits.start_instance(4101, 'gpu-a100-1', '1.20');
SET credits.clock = '2026-03-02 09:30+00';
SELECT credits.stop_instance(4101, 'gpu-a100-1');
SELECT pg_temp.keep('transaction', 'U1', transaction_id) AS u1
  FROM credits.transactions WHERE project_id = 4101 AND type = 'usage' \gset
SELECT pg_temp.n('transaction', transaction_id) AS id, type, status, amount, description
  FROM credits.transactions WHERE transaction_id = :u1;
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused(format('SELECT credits.complete_deposit(4101, %s)', :u1));
SELECT pg_temp.refused(format('SELECT credits.fail_deposit(4101, %s)', :u1));
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;

-- A balance that would leave the range: refused, the deposit stays pending and the balance
-- unchanged.  (The balance is put near the top of the range directly, in a transaction rolled
-- back afterwards: a balance this large would overflow the sums of pg_temp.ledger_state().)
SELECT credits.open_account(4103);
SELECT credits.add_payment_method(4103, 'pm_big') > 0 AS added;
BEGIN;
UPDATE credits.accounts SET balance = '9223372036850.00' WHERE project_id = 4103;
SELECT pg_temp.keep('transaction', 'BIG', credits.add_credits(4103, '5.00')) AS big \gset
SELECT pg_temp.refused(format('SELECT credits.complete_deposit(4103, %s)', :big));
SELECT balance FROM credits.accounts WHERE project_id = 4103;
SELECT pg_temp.n('transaction', transaction_id) AS id, status FROM credits.transactions
 WHERE project_id = 4103 ORDER BY transaction_id;
ROLLBACK;
SELECT balance FROM credits.accounts WHERE project_id = 4103;

--
-- add_credits refuses bad input with its SQLSTATE and records nothing (no transaction, no
-- event).
--
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused('SELECT credits.add_credits(4199, ''25'')');                -- unknown project
SELECT pg_temp.refused('SELECT credits.add_credits(NULL, ''25'')');
SELECT pg_temp.refused('SELECT credits.add_credits(4101, NULL)');
SELECT pg_temp.refused('SELECT credits.add_credits(4101, ''0'')');
SELECT pg_temp.refused('SELECT credits.add_credits(4101, ''-25'')');
SELECT pg_temp.refused('SELECT credits.add_credits(4102, ''25'')');                -- no payment method
SELECT pg_temp.refused(format('SELECT credits.add_credits(4102, ''25'', %s)', :visa));   -- another project's method
SELECT pg_temp.refused('SELECT credits.add_credits(4101, ''25'', -1)');            -- unknown method
SELECT pg_temp.refused('SELECT credits.add_credits(4101, ''25'', idempotency_key => '''')');
SELECT pg_temp.refused(format('SELECT credits.add_credits(4101, ''25'', idempotency_key => %L)', repeat('k', 201)));
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
-- a removed method cannot be charged, and removing the default leaves none to charge
SELECT credits.remove_payment_method(4101, :mc);
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused(format('SELECT credits.add_credits(4101, ''25'', %s)', :mc));
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT credits.open_account(4104);
SELECT pg_temp.keep('method', 'AMEX', credits.add_payment_method(4104, 'pm_amex')) AS amex \gset
SELECT credits.remove_payment_method(4104, :amex);
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused('SELECT credits.add_credits(4104, ''25'')');
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;

--
-- The minimum deposit: the setting credits.minimum_deposit, 5.00 by default.
--
SHOW credits.minimum_deposit;
SELECT credits.minimum_deposit();
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused('SELECT credits.add_credits(4101, ''4.999999'')');
SELECT pg_temp.refused('SELECT credits.add_credits(4101, ''0.000001'')');
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT pg_temp.keep('transaction', 'MIN5', credits.add_credits(4101, '5')) AS min5 \gset
SELECT amount, status FROM credits.transactions WHERE transaction_id = :min5;
-- A superuser may raise it (or lower it) ...
SET credits.minimum_deposit = '20';
SELECT credits.minimum_deposit();
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused('SELECT credits.add_credits(4101, ''19.99'')');
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT pg_temp.keep('transaction', 'MIN20', credits.add_credits(4101, '20')) AS min20 \gset
SET credits.minimum_deposit = '1.50';
SELECT pg_temp.keep('transaction', 'MIN1_50', credits.add_credits(4101, '1.50')) AS min1_50 \gset
SELECT pg_temp.n('transaction', transaction_id) AS id, amount, status FROM credits.transactions
 WHERE transaction_id IN (:min20, :min1_50) ORDER BY transaction_id;
-- ... but only to an amount of credits that is not negative.
SELECT pg_temp.fails('SET credits.minimum_deposit = ''abc''');
SELECT pg_temp.fails('SET credits.minimum_deposit = ''-5''');
SELECT pg_temp.fails('SET credits.minimum_deposit = ''1.0000001''');
SELECT pg_temp.fails('SET credits.minimum_deposit = ''''');
SHOW credits.minimum_deposit;
RESET credits.minimum_deposit;
SHOW credits.minimum_deposit;
SELECT credits.fail_deposit(4101, :min5), credits.fail_deposit(4101, :min20), credits.fail_deposit(4101, :min1_50);
-- Nobody but a superuser may change it, or the clock (README "Time").
SET ROLE credits_app;
SET credits.minimum_deposit = '1';
SET credits.clock = '2020-01-01 00:00+00';
SET credits.event_lease = '1h';
SELECT set_config('credits.clock', '2020-01-01 00:00+00', false);
SELECT set_config('credits.minimum_deposit', '1', true);
RESET ROLE;
SHOW credits.minimum_deposit;
SHOW credits.clock;
SHOW credits.event_lease;
SELECT credits.now();

--
-- Idempotency keys: the same key (per project) with the same arguments returns the original
-- transaction id and writes nothing; with other arguments it is an error.
--
SET credits.clock = '2026-03-02 10:00+00';
SELECT pg_temp.keep('transaction', 'K1', credits.add_credits(4101, '30.00', NULL, 'order-1001')) AS k1 \gset
SELECT count(*) AS charge_events FROM credits.events WHERE transaction_id = :k1;
SELECT pg_temp.ledger_state() AS before \gset
SELECT credits.add_credits(4101, '30.00', NULL, 'order-1001') = :k1 AS same_id;
SELECT credits.add_credits(4101, '30', idempotency_key => 'order-1001') = :k1 AS same_id;
SELECT credits.add_credits(4101, '30.00', :visa, 'order-1001') = :k1 AS same_id;  -- the method it used
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT count(*) AS charge_events FROM credits.events WHERE transaction_id = :k1;
-- other arguments under the same key: refused, nothing written
SELECT pg_temp.refused('SELECT credits.add_credits(4101, ''30.01'', NULL, ''order-1001'')');
SELECT pg_temp.keep('method', 'DISCOVER', credits.add_payment_method(4101, 'pm_discover', make_default => false)) AS discover \gset
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused(format('SELECT credits.add_credits(4101, ''30.00'', %s, ''order-1001'')', :discover));
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
-- the key still answers after the deposit completed (the balance rises once) ...
SELECT credits.complete_deposit(4101, :k1, 'https://pay.example/invoices/in_1001');
SELECT pg_temp.ledger_state() AS before \gset
SELECT credits.add_credits(4101, '30.00', NULL, 'order-1001') = :k1 AS same_id;
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
-- ... also when the minimum was raised since (a retry is not a new deposit) ...
SET credits.minimum_deposit = '50';
SELECT credits.add_credits(4101, '30.00', NULL, 'order-1001') = :k1 AS same_id;
SELECT pg_temp.refused('SELECT credits.add_credits(4101, ''30.00'', NULL, ''order-1001-b'')');
RESET credits.minimum_deposit;
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
-- ... and after it failed: a new attempt needs a new key.
SELECT pg_temp.keep('transaction', 'K2', credits.add_credits(4101, '12.00', NULL, 'order-1002')) AS k2 \gset
SELECT credits.fail_deposit(4101, :k2, 'expired_card');
SELECT pg_temp.ledger_state() AS before \gset
SELECT credits.add_credits(4101, '12.00', NULL, 'order-1002') = :k2 AS same_id;
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT pg_temp.n('transaction', transaction_id) AS id, status, idempotency_key
  FROM credits.transactions WHERE transaction_id IN (:k1, :k2) ORDER BY transaction_id;
-- A key that is refused for another reason is not used up.
SELECT pg_temp.refused('SELECT credits.add_credits(4101, ''1.00'', NULL, ''order-1003'')');
SELECT pg_temp.keep('transaction', 'K3', credits.add_credits(4101, '15.00', NULL, 'order-1003')) AS k3 \gset
SELECT credits.fail_deposit(4101, :k3);
-- Keys are per project: the same key in another project is another deposit.
SELECT credits.add_payment_method(4102, 'pm_4102') > 0 AS added;
SELECT pg_temp.keep('transaction', 'K1_4102', credits.add_credits(4102, '30.00', NULL, 'order-1001')) AS k1_4102 \gset
SELECT :k1_4102 <> :k1 AS other_deposit;
SELECT project_id, pg_temp.n('transaction', transaction_id) AS id, status, amount
  FROM credits.transactions WHERE idempotency_key = 'order-1001' ORDER BY project_id;
SELECT credits.complete_deposit(4102, :k1_4102);
-- Without a key every call is a new deposit.
SELECT pg_temp.keep('transaction', 'N1', credits.add_credits(4102, '5')) AS n1 \gset
SELECT pg_temp.keep('transaction', 'N2', credits.add_credits(4102, '5')) AS n2 \gset
SELECT :n1 <> :n2 AS two_deposits;
SELECT credits.fail_deposit(4102, :n1), credits.fail_deposit(4102, :n2);

--
-- What the project sees, and what the payment worker was asked to do.
--
SELECT pg_temp.n('transaction', transaction_id) AS id, date, type, description, left(invoice_url, 36) AS invoice_url,
       amount, status
  FROM credits.transaction_history WHERE project_id = 4101;
SELECT kind, pg_temp.n('transaction', transaction_id) AS transaction,
       payload->>'amount' AS amount, payload->>'provider_ref' AS provider_ref,
       payload->>'idempotency_key' AS idempotency_key
  FROM credits.events WHERE project_id = 4101 ORDER BY event_id;
SELECT project_id, current_balance, accumulating, available_balance
  FROM credits.balance_overview WHERE project_id BETWEEN 4100 AND 4199 ORDER BY project_id;

-- Every invariant holds.
SELECT * FROM credits.verify();
