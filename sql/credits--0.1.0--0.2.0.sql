-- credits 0.1.0 -> 0.2.0, run by ALTER EXTENSION credits UPDATE.
--
-- Every change made to the install sources (sql/install/*.sql) since 0.1.0 is also made here,
-- so that an upgraded database ends with exactly the objects of a fresh 0.2.0 install
-- (test/t/090_upgrade.pl compares them, and checks that every row is kept).
\echo Use "ALTER EXTENSION credits UPDATE TO '0.2.0'" to load this file. \quit

-- ---------------------------------------------------------------------------------------------
-- Numbers become credits implicitly (application code passes its decimal type as numeric);
-- an implicit or assignment conversion that would round is refused, ::credits rounds.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION credits.credits(numeric, integer, boolean) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_from_numeric_cast' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
DROP CAST (numeric AS credits.credits);
CREATE CAST (numeric AS credits.credits)
    WITH FUNCTION credits.credits(numeric, integer, boolean) AS IMPLICIT;
DROP CAST (integer AS credits.credits);
CREATE CAST (integer AS credits.credits)
    WITH FUNCTION credits.credits(integer) AS IMPLICIT;
DROP CAST (bigint AS credits.credits);
CREATE CAST (bigint AS credits.credits)
    WITH FUNCTION credits.credits(bigint) AS IMPLICIT;

-- ---------------------------------------------------------------------------
-- Plain numbers keep their own arithmetic.  Because numbers become credits
-- implicitly, numeric * integer could otherwise also be read as
-- credits * integer (and integer / numeric as credits / numeric), and
-- PostgreSQL would call it ambiguous wherever credits is on the search_path.
-- These operators match those pairs exactly and do what PostgreSQL does: the
-- integer becomes numeric and the result is numeric.  They are inlined.
-- ---------------------------------------------------------------------------

CREATE FUNCTION credits.numeric_mul_int4(numeric, integer) RETURNS numeric
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS 'SELECT $1 * $2::numeric';
CREATE FUNCTION credits.int4_mul_numeric(integer, numeric) RETURNS numeric
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS 'SELECT $1::numeric * $2';
CREATE FUNCTION credits.numeric_mul_int8(numeric, bigint) RETURNS numeric
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS 'SELECT $1 * $2::numeric';
CREATE FUNCTION credits.int8_mul_numeric(bigint, numeric) RETURNS numeric
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS 'SELECT $1::numeric * $2';
CREATE FUNCTION credits.numeric_div_int4(numeric, integer) RETURNS numeric
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS 'SELECT $1 / $2::numeric';
CREATE FUNCTION credits.int4_div_numeric(integer, numeric) RETURNS numeric
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS 'SELECT $1::numeric / $2';
CREATE FUNCTION credits.numeric_div_int8(numeric, bigint) RETURNS numeric
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS 'SELECT $1 / $2::numeric';
CREATE FUNCTION credits.int8_div_numeric(bigint, numeric) RETURNS numeric
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS 'SELECT $1::numeric / $2';

CREATE OPERATOR credits.* (LEFTARG = numeric, RIGHTARG = integer,
    FUNCTION = credits.numeric_mul_int4, COMMUTATOR = OPERATOR(credits.*));
CREATE OPERATOR credits.* (LEFTARG = integer, RIGHTARG = numeric,
    FUNCTION = credits.int4_mul_numeric, COMMUTATOR = OPERATOR(credits.*));
CREATE OPERATOR credits.* (LEFTARG = numeric, RIGHTARG = bigint,
    FUNCTION = credits.numeric_mul_int8, COMMUTATOR = OPERATOR(credits.*));
CREATE OPERATOR credits.* (LEFTARG = bigint, RIGHTARG = numeric,
    FUNCTION = credits.int8_mul_numeric, COMMUTATOR = OPERATOR(credits.*));
CREATE OPERATOR credits./ (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = credits.numeric_div_int4);
CREATE OPERATOR credits./ (LEFTARG = integer, RIGHTARG = numeric, FUNCTION = credits.int4_div_numeric);
CREATE OPERATOR credits./ (LEFTARG = numeric, RIGHTARG = bigint, FUNCTION = credits.numeric_div_int8);
CREATE OPERATOR credits./ (LEFTARG = bigint, RIGHTARG = numeric, FUNCTION = credits.int8_div_numeric);

-- ---------------------------------------------------------------------------------------------
-- A description of every public object (sql/install/95_comments.sql).
-- ---------------------------------------------------------------------------------------------
-- name starts with an underscore are internal.)  Objects added later carry their COMMENT where
-- they are created; regress test comments lists any public object without one.
COMMENT ON SCHEMA credits IS 'credits: prepaid credit billing (balances, deposits, hourly usage deductions, zero-balance enforcement)';
-- the type
COMMENT ON TYPE credits.credits IS 'exact amount of credits (1 credit = 1 USD): a signed 64-bit count of micro-credits, 6 fraction digits, rounding half to even';
COMMENT ON FUNCTION credits.credits_in(cstring) IS 'text input of credits: optional sign, digits, optional point and 1-6 digits (22P02 otherwise, 22003 out of range)';
COMMENT ON FUNCTION credits.credits_out(credits.credits) IS 'text output of credits: 2 to 6 fraction digits, locale-independent';
COMMENT ON FUNCTION credits.credits_recv(internal) IS 'binary input of credits: exactly 8 bytes, big-endian';
COMMENT ON FUNCTION credits.credits_send(credits.credits) IS 'binary output of credits: 8 bytes, big-endian';
COMMENT ON FUNCTION credits.credits_pl(credits.credits, credits.credits) IS 'implements credits + credits (22003 on overflow)';
COMMENT ON FUNCTION credits.credits_mi(credits.credits, credits.credits) IS 'implements credits - credits (22003 on overflow)';
COMMENT ON FUNCTION credits.credits_um(credits.credits) IS 'implements unary minus (22003 for the smallest value)';
COMMENT ON FUNCTION credits.credits_up(credits.credits) IS 'implements unary plus';
COMMENT ON FUNCTION credits.abs(credits.credits) IS 'absolute value of an amount (22003 for the smallest value)';
COMMENT ON FUNCTION credits.credits_mul_numeric(credits.credits, numeric) IS 'implements credits * numeric, rounded half to even';
COMMENT ON FUNCTION credits.numeric_mul_credits(numeric, credits.credits) IS 'implements numeric * credits, rounded half to even';
COMMENT ON FUNCTION credits.credits_mul_int4(credits.credits, integer) IS 'implements credits * integer (22003 on overflow)';
COMMENT ON FUNCTION credits.int4_mul_credits(integer, credits.credits) IS 'implements integer * credits (22003 on overflow)';
COMMENT ON FUNCTION credits.credits_mul_int8(credits.credits, bigint) IS 'implements credits * bigint (22003 on overflow)';
COMMENT ON FUNCTION credits.int8_mul_credits(bigint, credits.credits) IS 'implements bigint * credits (22003 on overflow)';
COMMENT ON FUNCTION credits.credits_div_numeric(credits.credits, numeric) IS 'implements credits / numeric, rounded half to even (22012 by zero)';
COMMENT ON FUNCTION credits.credits_div_int4(credits.credits, integer) IS 'implements credits / integer, rounded half to even (22012 by zero)';
COMMENT ON FUNCTION credits.credits_div_int8(credits.credits, bigint) IS 'implements credits / bigint, rounded half to even (22012 by zero)';
COMMENT ON FUNCTION credits.credits_div_credits(credits.credits, credits.credits) IS 'implements credits / credits: their ratio as numeric (22012 by zero)';
COMMENT ON FUNCTION credits.numeric_mul_int4(numeric, integer) IS 'numeric * integer as PostgreSQL computes it (keeps the pair unambiguous with credits on the search_path)';
COMMENT ON FUNCTION credits.int4_mul_numeric(integer, numeric) IS 'integer * numeric as PostgreSQL computes it (keeps the pair unambiguous with credits on the search_path)';
COMMENT ON FUNCTION credits.numeric_mul_int8(numeric, bigint) IS 'numeric * bigint as PostgreSQL computes it (keeps the pair unambiguous with credits on the search_path)';
COMMENT ON FUNCTION credits.int8_mul_numeric(bigint, numeric) IS 'bigint * numeric as PostgreSQL computes it (keeps the pair unambiguous with credits on the search_path)';
COMMENT ON FUNCTION credits.numeric_div_int4(numeric, integer) IS 'numeric / integer as PostgreSQL computes it (keeps the pair unambiguous with credits on the search_path)';
COMMENT ON FUNCTION credits.int4_div_numeric(integer, numeric) IS 'integer / numeric as PostgreSQL computes it (keeps the pair unambiguous with credits on the search_path)';
COMMENT ON FUNCTION credits.numeric_div_int8(numeric, bigint) IS 'numeric / bigint as PostgreSQL computes it (keeps the pair unambiguous with credits on the search_path)';
COMMENT ON FUNCTION credits.int8_div_numeric(bigint, numeric) IS 'bigint / numeric as PostgreSQL computes it (keeps the pair unambiguous with credits on the search_path)';
COMMENT ON FUNCTION credits.credits(numeric) IS 'numeric to credits, rounded half to even (NaN and infinities refused)';
COMMENT ON FUNCTION credits.credits(numeric, integer, boolean) IS 'the cast numeric to credits: ::credits rounds half to even; implicitly or on assignment a value that would round is refused (22023)';
COMMENT ON FUNCTION credits.credits(integer) IS 'the cast integer to credits: whole credits';
COMMENT ON FUNCTION credits.credits(bigint) IS 'the cast bigint to credits: whole credits (22003 out of range)';
COMMENT ON FUNCTION credits."numeric"(credits.credits) IS 'the cast credits to numeric: exact, with the fraction digits the text form shows';
COMMENT ON FUNCTION credits.credits_eq(credits.credits, credits.credits) IS 'implements credits = credits';
COMMENT ON FUNCTION credits.credits_ne(credits.credits, credits.credits) IS 'implements credits <> credits';
COMMENT ON FUNCTION credits.credits_lt(credits.credits, credits.credits) IS 'implements credits < credits';
COMMENT ON FUNCTION credits.credits_le(credits.credits, credits.credits) IS 'implements credits <= credits';
COMMENT ON FUNCTION credits.credits_gt(credits.credits, credits.credits) IS 'implements credits > credits';
COMMENT ON FUNCTION credits.credits_ge(credits.credits, credits.credits) IS 'implements credits >= credits';
COMMENT ON FUNCTION credits.credits_cmp(credits.credits, credits.credits) IS 'btree comparison of credits';
COMMENT ON FUNCTION credits.credits_sortsupport(internal) IS 'btree sort support of credits';
COMMENT ON FUNCTION credits.credits_hash(credits.credits) IS 'hash of credits (hash indexes, hash joins)';
COMMENT ON FUNCTION credits.credits_hash_extended(credits.credits, bigint) IS 'seeded hash of credits (hash partitioning)';
COMMENT ON FUNCTION credits.credits_smaller(credits.credits, credits.credits) IS 'the smaller of two amounts (min)';
COMMENT ON FUNCTION credits.credits_larger(credits.credits, credits.credits) IS 'the larger of two amounts (max)';
COMMENT ON FUNCTION credits.credits_agg_accum(internal, credits.credits) IS 'state function of sum and avg over credits (exact 128-bit sum)';
COMMENT ON FUNCTION credits.credits_agg_accum_inv(internal, credits.credits) IS 'inverse state function of sum and avg over credits (moving windows)';
COMMENT ON FUNCTION credits.credits_agg_combine(internal, internal) IS 'combines partial sums of credits (parallel aggregation)';
COMMENT ON FUNCTION credits.credits_agg_serialize(internal) IS 'serializes a partial sum of credits (parallel aggregation)';
COMMENT ON FUNCTION credits.credits_agg_deserialize(bytea, internal) IS 'deserializes a partial sum of credits (parallel aggregation)';
COMMENT ON FUNCTION credits.credits_sum_final(internal) IS 'final function of sum over credits (22003 out of range)';
COMMENT ON FUNCTION credits.credits_avg_final(internal) IS 'final function of avg over credits, rounded half to even';
COMMENT ON AGGREGATE credits.sum(credits.credits) IS 'exact sum of amounts (22003 when it leaves the range)';
COMMENT ON AGGREGATE credits.avg(credits.credits) IS 'exact average of amounts, rounded half to even';
COMMENT ON AGGREGATE credits.min(credits.credits) IS 'smallest amount';
COMMENT ON AGGREGATE credits.max(credits.credits) IS 'largest amount';
-- time and settings
COMMENT ON FUNCTION credits.now() IS 'billing time: now(), or the timestamptz in the superuser-only setting credits.clock';
COMMENT ON FUNCTION credits.minimum_deposit() IS 'the smallest deposit and auto-recharge amount (setting credits.minimum_deposit, default 5.00)';
COMMENT ON FUNCTION credits.event_lease() IS 'how long a claimed event stays with its worker (setting credits.event_lease, default 5 minutes)';
COMMENT ON FUNCTION credits.hour_of(timestamptz) IS 'start of the UTC hour that a time falls in (billing hours are UTC hours)';
-- accounts and payment methods
COMMENT ON FUNCTION credits.open_account(bigint) IS 'opens a project''s account at balance zero; does nothing when it is open (credits_app)';
COMMENT ON FUNCTION credits.add_payment_method(bigint, text, text, boolean) IS 'adds a payment method by the provider''s id (never a card number) and returns its id; optionally the default (credits_app)';
COMMENT ON FUNCTION credits.set_default_payment_method(bigint, bigint) IS 'makes a payment method the project''s one default (credits_app)';
COMMENT ON FUNCTION credits.remove_payment_method(bigint, bigint) IS 'removes a payment method (kept in history); refused while auto-recharge charges it (credits_app)';
-- deposits
COMMENT ON FUNCTION credits.add_credits(bigint, credits.credits, bigint, text) IS 'requests a deposit: a pending transaction and a charge_requested event; returns its id; idempotent by key (credits_app)';
COMMENT ON FUNCTION credits.complete_deposit(bigint, bigint, text) IS 'pending deposit or auto-recharge to completed: raises the balance now; returns the new balance (credits_worker)';
COMMENT ON FUNCTION credits.fail_deposit(bigint, bigint, text) IS 'pending deposit or auto-recharge to failed, with the provider''s reason (credits_worker)';
-- events
COMMENT ON FUNCTION credits.claim_events(integer) IS 'hands up to max_events unacknowledged events to one worker for credits.event_lease (credits_worker)';
COMMENT ON FUNCTION credits.ack_event(bigint) IS 'marks a claimed event as done (credits_worker)';
-- resources and usage
COMMENT ON FUNCTION credits.start_instance(bigint, text, credits.credits) IS 'starts, restarts or re-rates an instance billed per microsecond at rate_per_hour; refused without available balance (credits_app)';
COMMENT ON FUNCTION credits.stop_instance(bigint, text) IS 'stops a running instance and books its time; it may be started again (credits_app)';
COMMENT ON FUNCTION credits.attach_volume(bigint, text, credits.credits) IS 'attaches a volume billed per microsecond at rate_per_hour while accessible; refused without available balance (credits_app)';
COMMENT ON FUNCTION credits.delete_volume(bigint, text) IS 'deletes a volume and books its time; its id cannot be used again (credits_app)';
COMMENT ON FUNCTION credits.record_usage(bigint, text, credits.credits, text) IS 'records one API call''s charge against a product id in the current UTC hour; a repeated key is counted once (credits_app)';
COMMENT ON FUNCTION credits.record_usage_batch(bigint[], text[], credits.credits[], text[]) IS 'records many API calls at once, all or nothing; returns the elements taken (credits_app)';
COMMENT ON FUNCTION credits.available_balance(bigint) IS 'what a project can still spend: its balance less the usage accrued and not yet deducted, never below zero';
COMMENT ON FUNCTION credits.configure_auto_recharge(bigint, boolean, credits.credits, credits.credits, bigint) IS 'saves auto-recharge: below threshold, charge amount to the given or default method; re-arms it (credits_app)';
-- periodic work
COMMENT ON FUNCTION credits.run_hourly_deductions() IS 'deducts every ended usage hour not yet deducted, exactly once; returns the usage transactions completed (hourly, credits_worker)';
COMMENT ON FUNCTION credits.run_balance_checks() IS 'cuts off projects whose accrued usage used up their balance and starts due auto-recharges; returns the projects acted on (every minute, credits_worker)';
COMMENT ON FUNCTION credits.schedule_jobs() IS 'registers the two periodic runs as named pg_cron jobs (or says how, without pg_cron here)';
COMMENT ON FUNCTION credits.unschedule_jobs() IS 'removes the pg_cron jobs that schedule_jobs registered';
-- reading
COMMENT ON FUNCTION credits.verify(bigint) IS 'checks the ledger''s invariants for one project or all; no rows when every one holds';
COMMENT ON AGGREGATE credits.burn_rate(credits.credits, interval) IS 'credits per hour of amounts charged over periods (running rates and last hour''s API usage)';
COMMENT ON VIEW credits.balance_overview IS 'one row per project: balance, accumulating usage, available balance, burn rate per hour, hours remaining, auto-recharge';
COMMENT ON VIEW credits.transaction_history IS 'one row per transaction, newest first: date, type, description, invoice, signed amount, status, uncollected';
COMMENT ON VIEW credits.resource_overview IS 'one row per instance or volume ever started or attached, with its state and rate';
COMMENT ON VIEW credits.usage_in_progress IS 'usage not yet deducted, per project, resource and UTC hour';
COMMENT ON VIEW credits.accumulating_by_project IS 'usage not yet deducted, in total per project';
COMMENT ON TYPE credits.transaction_type IS 'what a transaction is: deposit, usage, auto_recharge';
COMMENT ON TYPE credits.transaction_status IS 'where a transaction is: pending, completed, failed (deposits); accumulating, completed (usage)';
-- roles
COMMENT ON ROLE credits_reader IS 'credits: reads the views, verify() and available_balance()';
COMMENT ON ROLE credits_app IS 'credits: reader, plus accounts, payment methods, deposits, resources, usage and settings';
COMMENT ON ROLE credits_worker IS 'credits: reader, plus completing and failing deposits, the events outbox and the periodic runs';
-- deduct: a usage hour's amount is what it took from the balance, so that the history adds up
-- to the balance.  In 0.1.0 a completed usage hour's amount was minus its whole charge and its
-- uncollected the part the balance did not cover; from 0.2.0 its amount is minus what it took
-- (charge = -amount + uncollected), and verify() checks that each balance is the sum of the
-- amounts of its completed transactions.  The completed usage rows are rewritten once, here:
-- the only change ever made to completed rows.  The guard trigger refuses every change to a
-- completed row, so it is disabled for this one UPDATE and enabled again, inside this script's
-- transaction (only the table's owner can do that; no application role can).  Accumulating
-- rows need nothing: 0.1.0 never gave them an uncollected part, and their amount stays their
-- charge so far.  (The library serves 0.1.0's symbol of the deduction the 0.1.0 way, so a
-- database not yet updated bills on as before: src/deduction.c.)
-- ---------------------------------------------------------------------------------------------
ALTER TABLE credits.transactions DROP CONSTRAINT usage_shape;
ALTER TABLE credits.transactions DISABLE TRIGGER transactions_guard;
UPDATE credits.transactions
   SET amount = amount OPERATOR(credits.+) uncollected
 WHERE type = 'usage' AND status = 'completed' AND uncollected <> '0'::credits.credits;
ALTER TABLE credits.transactions ENABLE TRIGGER transactions_guard;
ALTER TABLE credits.transactions ADD
    CONSTRAINT usage_shape CHECK (
        CASE WHEN type = 'usage'
             THEN resource_id IS NOT NULL AND usage_hour IS NOT NULL AND accrued_units IS NOT NULL
                  -- (a whole UTC hour: credits._completed_usage finds rows hour by hour)
                  AND usage_hour = credits.hour_of(usage_hour)
                  AND status IN ('accumulating', 'completed') AND amount <= '0'::credits.credits
                  AND uncollected >= '0'::credits.credits
                  AND (status = 'completed' OR uncollected = '0'::credits.credits)
                  AND method_id IS NULL AND idempotency_key IS NULL
             ELSE resource_id IS NULL AND usage_hour IS NULL AND accrued_units IS NULL
                  AND status IN ('pending', 'completed', 'failed') AND amount > '0'::credits.credits
                  AND uncollected = '0'::credits.credits
        END);

-- Deducts every usage hour before cur, oldest first per project, each written once, and
-- debits the accounts (src/deduction.c, which says how).  Returns the number of usage
-- transactions completed.  The caller holds the periodic-run lock.
CREATE OR REPLACE FUNCTION credits._deduct_ended_hours(cur timestamptz, at timestamptz) RETURNS bigint
    AS 'MODULE_PATHNAME', 'credits_deduct_hours' LANGUAGE C STRICT;

-- What a project consumes per hour, input by input for credits.burn_rate(amount, '1 hour'):
-- the rates of its running instances and accessible volumes, plus its API usage of the last
-- ended hour (deducted or not: its charge, collected or not).  Read it with a project_id
-- filter: it reaches every branch.
CREATE OR REPLACE VIEW credits._burn_rate_inputs AS
SELECT r.project_id, r.rate_per_hour AS amount
  FROM credits.resources r
 WHERE r.state IN ('running', 'available')
UNION ALL
SELECT t.project_id, t.uncollected - t.amount
  FROM credits.transactions t
 WHERE t.type = 'usage' AND t.status = 'completed'
   AND t.usage_hour = credits.hour_of(credits.now()) - interval '1 hour'
   AND NOT EXISTS (SELECT FROM credits.resources r
                    WHERE r.project_id = t.project_id AND r.resource_id = t.resource_id)
UNION ALL
SELECT u.project_id, -u.amount
  FROM credits.usage_in_progress u
 WHERE u.usage_hour = credits.hour_of(credits.now()) - interval '1 hour'
   AND NOT EXISTS (SELECT FROM credits.resources r
                    WHERE r.project_id = u.project_id AND r.resource_id = u.resource_id);

-- One row per transaction, newest first; usage hours not yet deducted show as accumulating
-- (with a null transaction_id while they have no stored row yet).  Amounts add up: over the
-- completed rows to the balance (a completed usage hour's amount is what it took from the
-- balance, its uncollected the rest of its charge), and with the accumulating rows to the
-- available balance.  An accumulating hour shows what it would take if it were deducted now: the
-- project's charges not yet deducted are taken from the balance in the deduction's order
-- (oldest hour first, within an hour stored rows by id, then the others by resource id in
-- byte order), and what the balance would not cover shows as uncollected.
CREATE OR REPLACE VIEW credits.transaction_history AS
SELECT h.* FROM (
    SELECT t.transaction_id, t.project_id, t.created_at AS date, t.type, t.description, t.invoice_url,
           t.amount, t.status, t.uncollected
      FROM credits.transactions t
     WHERE t.type <> 'usage'
    UNION ALL
    -- (usage rows apart: they have an index of their own, read hour by hour)
    SELECT t.transaction_id, t.project_id, t.usage_hour, t.type, t.description, NULL,
           t.amount, t.status, t.uncollected
      FROM credits._completed_usage t
    UNION ALL
    SELECT u.transaction_id, u.project_id, u.usage_hour, 'usage'::credits.transaction_type, u.description, NULL,
           -u.taken::credits.credits, 'accumulating'::credits.transaction_status,
           u.charge - u.taken::credits.credits
      FROM (SELECT u.transaction_id, u.project_id, u.usage_hour, u.description, -u.amount AS charge,
                   -- (the balance left by the charges before it, between zero and its charge)
                   greatest(least(a.balance::numeric - sum((-u.amount)::numeric) OVER taking,
                                  '0'::numeric) + (-u.amount)::numeric,
                            '0'::numeric) AS taken
              FROM credits.usage_in_progress u
              JOIN credits.accounts a ON a.project_id = u.project_id
            WINDOW taking AS (PARTITION BY u.project_id
                              ORDER BY u.usage_hour, u.transaction_id NULLS LAST, u.resource_id COLLATE "C")) AS u) AS h
 ORDER BY h.date DESC, h.transaction_id DESC NULLS FIRST;

-- Every broken invariant, one row each (no rows: all is well).  An unknown project is an
-- error (P0002), not a clean result.  For one project its transactions are read through the
-- indexes (deposits by the history index, usage hour by hour); for all, the whole table.
-- (jit = off: the plan costs the whole-table branches too, and compiling it took about 1 s
-- at 100,000 projects, 500 times the time of checking one project.)
CREATE OR REPLACE FUNCTION credits.verify(project_id bigint DEFAULT NULL)
    RETURNS TABLE (project_id bigint, problem text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp SET jit = off AS $$
    WITH scope AS (
        SELECT a.* FROM credits.accounts a WHERE verify.project_id IS NULL
        UNION ALL
        SELECT a.* FROM credits.accounts a
         WHERE verify.project_id IS NOT NULL
           AND a.project_id = (SELECT credits._require_account(verify.project_id))),
    -- the transactions of the one project asked about, read once (completed usage hour by
    -- hour, over its deducted hours)
    project_rows AS MATERIALIZED (
        SELECT t.* FROM credits.transactions t
         WHERE t.type <> 'usage' AND t.project_id = verify.project_id
        UNION ALL
        SELECT t.* FROM credits._completed_usage t
         WHERE t.project_id = verify.project_id
        UNION ALL
        SELECT t.* FROM credits.transactions t
         WHERE t.status = 'accumulating' AND t.project_id = verify.project_id),
    -- the transactions of the accounts in scope (all of them: read by each check)
    scoped AS NOT MATERIALIZED (
        SELECT t.* FROM credits.transactions t
         WHERE verify.project_id IS NULL
           AND EXISTS (SELECT FROM credits.accounts a WHERE a.project_id = t.project_id)
        UNION ALL
        SELECT * FROM project_rows),
    -- (summed per project before the join: a join first sorted every transaction)
    -- (and the first and last completed usage hour, which must lie in its deducted hours)
    ledger AS (
        SELECT s.project_id, coalesce(x.total, '0'::credits.credits) AS total, x.first_hour, x.last_hour
          FROM scope s
          LEFT JOIN (SELECT t.project_id, sum(t.amount) AS total,
                            min(t.usage_hour) AS first_hour, max(t.usage_hour) AS last_hour
                       FROM scoped t WHERE t.status = 'completed'
                      GROUP BY t.project_id) AS x USING (project_id))
    SELECT s.project_id, format('balance %s differs from the sum of completed transactions %s', s.balance, l.total)
      FROM scope s JOIN ledger l USING (project_id)
     WHERE s.balance <> l.total
    UNION ALL
    SELECT s.project_id,
           format('completed usage hours span [%s, %s), ', l.first_hour, l.last_hour + interval '1 hour')
           || CASE WHEN s.deducted_from IS NULL THEN 'but the project has no deducted hours'
                   ELSE format('not within its deducted hours [%s, %s)', s.deducted_from, s.deducted_until) END
      FROM scope s JOIN ledger l USING (project_id)
     WHERE l.first_hour IS NOT NULL
       AND (s.deducted_from IS NULL OR l.first_hour < s.deducted_from OR l.last_hour >= s.deducted_until)
    UNION ALL
    -- (rolled-up API usage of an hour already completed would be charged again)
    SELECT u.project_id, format('API usage of %s in the hour %s is rolled up, but that hour is completed',
                                u.resource_id, u.usage_hour)
      FROM scope s JOIN credits.usage_rollup u USING (project_id)
     WHERE EXISTS (SELECT FROM credits.transactions t
                    WHERE t.usage_hour = u.usage_hour AND t.project_id = u.project_id
                      AND t.resource_id = u.resource_id AND t.type = 'usage' AND t.status = 'completed')
    UNION ALL
    SELECT s.project_id, format('balance %s is negative', s.balance)
      FROM scope s WHERE s.balance < '0'::credits.credits
    UNION ALL
    SELECT t.project_id, format('transaction %s belongs to no account', t.transaction_id)
      FROM credits.transactions t
     WHERE verify.project_id IS NULL
       AND NOT EXISTS (SELECT FROM credits.accounts a WHERE a.project_id = t.project_id)
    UNION ALL
    SELECT t.project_id, format('transaction %s names payment method %s of another project or none',
                                t.transaction_id, t.method_id)
      FROM scoped t
     WHERE t.method_id IS NOT NULL
       AND NOT EXISTS (SELECT FROM credits.payment_methods m
                        WHERE m.method_id = t.method_id AND m.project_id = t.project_id)
    UNION ALL
    -- (for all projects, grouped in the order of the usage index, as it streams: orphans,
    -- reported above, are counted too)
    SELECT t.project_id, format('resource %s is charged %s times for the hour %s', t.resource_id, count(*), t.usage_hour)
      FROM credits.transactions t
     WHERE verify.project_id IS NULL AND t.type = 'usage'
     GROUP BY t.usage_hour, t.project_id, t.resource_id HAVING count(*) > 1
    UNION ALL
    SELECT t.project_id, format('resource %s is charged %s times for the hour %s', t.resource_id, count(*), t.usage_hour)
      FROM project_rows t
     WHERE t.type = 'usage'
     GROUP BY t.usage_hour, t.project_id, t.resource_id HAVING count(*) > 1
    UNION ALL
    SELECT t.project_id, format('transaction %s: %s %s is illegal', t.transaction_id, t.status, t.type)
      FROM scoped t
     WHERE (t.type = 'usage' AND t.status NOT IN ('accumulating', 'completed'))
        OR (t.type <> 'usage' AND t.status = 'accumulating')
        OR (t.status = 'completed') <> (t.completed_at IS NOT NULL)
        OR (t.status = 'failed') <> (t.failed_at IS NOT NULL)
        -- (a usage hour's charge is -amount + uncollected; only a completed one has uncollected)
        OR (t.type = 'usage'
            AND t.uncollected::numeric - t.amount::numeric <> credits._accrued_amount(t.accrued_units)::numeric)
        OR (t.type = 'usage' AND t.status = 'completed' AND t.usage_hour + interval '1 hour' > t.completed_at)
        OR t.uncollected < '0'::credits.credits
        OR (NOT (t.type = 'usage' AND t.status = 'completed') AND t.uncollected <> '0'::credits.credits)
    UNION ALL
    SELECT s.project_id, format('project is at zero balance but %s %s is %s', r.kind, r.resource_id, r.state)
      FROM scope s JOIN credits.resources r USING (project_id)
     WHERE (s.depleted OR s.balance = '0'::credits.credits) AND r.state IN ('running', 'available')
    UNION ALL
    SELECT t.project_id, format('%s auto-recharges are pending', count(*))
      FROM scoped t
     WHERE t.type = 'auto_recharge' AND t.status = 'pending'
     GROUP BY t.project_id HAVING count(*) > 1;
$$;


-- ---------------------------------------------------------------------------------------------
-- deduct: the periodic runs never wait on one project.  The deduction and the balance check
-- pass over an account locked by another transaction (a later run catches it up); a project
-- whose work raises is skipped, listed in the view credits.billing_errors while it fails, with
-- one billing_error event (a new kind), and retried at every later run.  The batch runs as
-- before; only when it fails are the projects taken one by one, each in a subtransaction.
-- "Usage has used up the balance" is one function, credits._used_up.  The deduction no
-- longer searches a project's hours one by one (src/deduction.c).
-- ---------------------------------------------------------------------------------------------
ALTER TABLE credits.events DROP CONSTRAINT events_kind_check;
ALTER TABLE credits.events ADD CONSTRAINT events_kind_check CHECK (kind IN ('charge_requested', 'instance_terminated',
                       'volume_inaccessible', 'volume_available', 'balance_depleted',
                       'billing_error'));

DROP FUNCTION credits._deduct_ended_hours(timestamptz, timestamptz);

-- Deducts every usage hour before cur, oldest first per project, each written once, and
-- debits the accounts (src/deduction.c, which says how): of every due project, or of
-- only_project.  An account locked by another transaction is passed over: a later run catches
-- its hours up.  Returns the number of usage transactions completed.  The caller holds the
-- periodic-run lock.
CREATE FUNCTION credits._deduct_ended_hours(cur timestamptz, at timestamptz, only_project bigint DEFAULT NULL)
    RETURNS bigint AS 'MODULE_PATHNAME', 'credits_deduct_hours' LANGUAGE C;

REVOKE ALL ON FUNCTION credits._deduct_ended_hours(timestamptz, timestamptz, bigint) FROM PUBLIC;

-- The projects with usage to deduct before cur, in project order (src/deduction.c: the
-- deduction's own list).
CREATE FUNCTION credits._deduction_due(cur timestamptz) RETURNS bigint[]
    AS 'MODULE_PATHNAME', 'credits_deduction_due' LANGUAGE C STRICT STABLE;

REVOKE ALL ON FUNCTION credits._deduction_due(timestamptz) FROM PUBLIC;

-- The projects whose periodic work failed, one row each while it fails: the run that failed
-- last, when, and its error.  A run that bills the project again deletes the row.
CREATE TABLE credits.billing_failures (
    project_id bigint PRIMARY KEY,
    at         timestamptz NOT NULL,
    run        text NOT NULL CHECK (run IN ('run_hourly_deductions', 'run_balance_checks')),
    sqlstate   text NOT NULL,
    message    text NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('credits.billing_failures', '');

CREATE VIEW credits.billing_errors AS
SELECT f.project_id, f.at, f.run, f.sqlstate, f.message FROM credits.billing_failures f;
COMMENT ON VIEW credits.billing_errors IS 'one row per project whose periodic work (run) failed, while it fails: when, and its SQLSTATE and message; the project is retried at every later run';


GRANT SELECT ON credits.billing_errors TO credits_reader;

-- Records that run failed for project with an error (sqlstate, message).  The first failure
-- of a spell queues one billing_error event; later ones update the row.
CREATE FUNCTION credits._record_billing_error(project_id bigint, run text, sqlstate text, message text)
    RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    first_failure boolean;
BEGIN
    INSERT INTO credits.billing_failures AS f VALUES (project_id, credits.now(), run, sqlstate, message)
    ON CONFLICT ON CONSTRAINT billing_failures_pkey DO UPDATE
       SET at = excluded.at, run = excluded.run, sqlstate = excluded.sqlstate, message = excluded.message
    RETURNING f.xmax = 0 INTO first_failure;
    IF first_failure THEN
        PERFORM credits._enqueue_event(project_id, 'billing_error', NULL, NULL,
            jsonb_build_object('run', run, 'sqlstate', sqlstate, 'message', message, 'at', credits.now()));
    END IF;
END $$;

REVOKE ALL ON FUNCTION credits._record_billing_error(bigint, text, text, text) FROM PUBLIC;

-- Deducts the hours before cur (credits._deduct_ended_hours): all due projects at once; when
-- that fails (one project's work raised, and with it the batch), project by project, each in
-- a subtransaction of its own, so that a project whose work raises is recorded in
-- credits.billing_errors and skipped while the others are billed.  (A lock that cannot be
-- had at once, 55P03, only passes the project over.)  Returns the number of usage
-- transactions completed and the projects that failed.
CREATE FUNCTION credits._deduct_isolated(cur timestamptz, at timestamptz, OUT completed bigint, OUT failed bigint[])
    LANGUAGE plpgsql AS $$
DECLARE
    p bigint;
    state text;
    msg text;
BEGIN
    failed := '{}';
    BEGIN
        completed := credits._deduct_ended_hours(cur, at);
        RETURN;
    EXCEPTION
        -- (the whole transaction's: no retry in it can succeed)
        WHEN serialization_failure OR deadlock_detected THEN RAISE;
        WHEN OTHERS THEN NULL;
    END;
    completed := 0;
    FOREACH p IN ARRAY credits._deduction_due(cur) LOOP
        BEGIN
            completed := completed + credits._deduct_ended_hours(cur, at, p);
        EXCEPTION
            WHEN serialization_failure OR deadlock_detected THEN RAISE;
            WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
                IF state <> '55P03' THEN
                    PERFORM credits._record_billing_error(p, 'run_hourly_deductions', state, msg);
                    failed := failed || p;
                END IF;
        END;
    END LOOP;
END $$;

REVOKE ALL ON FUNCTION credits._deduct_isolated(timestamptz, timestamptz) FROM PUBLIC;

-- Completes and deducts every usage hour that has ended and is not yet deducted, oldest first,
-- and starts the auto-recharges that the new balances call for.  Returns the number of usage
-- transactions completed.  A project whose account is locked waits for a later run; one whose
-- work fails is skipped and listed in credits.billing_errors until a run bills it again.
-- (jit = off in both periodic runs: the row estimates of the hour segments are far too high,
-- and compiling the plans cost more than running them, about 1 s per run at 100,000 projects.)
CREATE OR REPLACE FUNCTION credits.run_hourly_deductions() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp SET jit = off AS $$
DECLARE
    at timestamptz;
    cur timestamptz;
    deducted record;
    due record;
    recharge_failed bigint[] := '{}';
BEGIN
    PERFORM credits._lock_periodic_runs();
    at := credits.now();
    cur := credits.hour_of(at);
    PERFORM credits._fold_usage_events(at);
    SELECT * INTO deducted FROM credits._deduct_isolated(cur, at);
    -- (the accrued usage of every project is worth computing only when one may recharge)
    IF EXISTS (SELECT FROM credits.auto_recharge r WHERE r.enabled AND r.armed) THEN
        SELECT * INTO due FROM credits._due_projects();
        SELECT a.failed INTO recharge_failed
          FROM credits._act_on_balances('run_hourly_deductions', '{}', '{}', due.recharge_ids, due.recharge_accrued) AS a;
    END IF;
    -- (billed again: deducted up to cur, and nothing failed for it in this run)
    DELETE FROM credits.billing_failures f USING credits.accounts a
     WHERE f.run = 'run_hourly_deductions' AND a.project_id = f.project_id AND a.deducted_until >= cur
       AND f.project_id <> ALL (deducted.failed || recharge_failed);
    RETURN deducted.completed;
END $$;

-- Whether usage accrued and not yet deducted (accrued) has used up a balance: the one rule of
-- every cut-off, by the balance check and by the zero-balance trigger.
CREATE FUNCTION credits._used_up(balance credits.credits, accrued credits.credits) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN balance <= accrued;
REVOKE ALL ON FUNCTION credits._used_up(credits.credits, credits.credits) FROM PUBLIC;

-- Cuts a project off at time at: books every billing resource's time up to at, terminates
-- instances, locks volumes, queues the events.  A resource locked by another transaction
-- raises 55P03 at once rather than wait: the periodic runs pass the project over and cut it off
-- at a later run (the paths that change resources lock the account first, so this is rare).
CREATE OR REPLACE FUNCTION credits._cut_off(project_id bigint, at timestamptz) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    r credits.resources;
    balance credits.credits;
BEGIN
    FOR r IN SELECT * FROM credits.resources x
              WHERE x.project_id = _cut_off.project_id AND x.state IN ('running', 'available')
              ORDER BY x.resource_id FOR UPDATE NOWAIT
    LOOP
        PERFORM credits._book_usage(project_id, r.kind, r.resource_id, r.rate_per_hour, r.accrued_until, at);
        UPDATE credits.resources x
           SET state = CASE r.kind WHEN 'instance' THEN 'terminated' ELSE 'inaccessible' END,
               state_since = at, accrued_until = NULL
         WHERE x.project_id = _cut_off.project_id AND x.resource_id = r.resource_id;
        PERFORM credits._enqueue_event(project_id,
            CASE r.kind WHEN 'instance' THEN 'instance_terminated' ELSE 'volume_inaccessible' END,
            r.resource_id, NULL,
            jsonb_build_object('resource_id', r.resource_id, 'kind', r.kind, 'at', at));
    END LOOP;
    SELECT a.balance INTO balance FROM credits.accounts a WHERE a.project_id = _cut_off.project_id;
    PERFORM credits._enqueue_event(project_id, 'balance_depleted', NULL, NULL,
        jsonb_build_object('balance', balance::text, 'at', at));
END $$;

-- The projects a periodic run may have to act on, found in one pass over the accounts with
-- their usage accrued and not yet deducted (the costly part, computed once per run): those
-- not cut off whose accrued usage has used up the balance, and those whose armed auto-recharge
-- finds the available balance below its threshold.  Each list comes with the accrued usage of
-- its projects, in project order.  (BEGIN ATOMIC: bound at install time, whatever the
-- caller's search_path.  The planner expects 1000 hour segments per resource and 200
-- projects, so left alone it nested-loops 100,000 index probes into accounts and sizes a
-- hash table for millions of groups; sorting in memory and no nested loops take a third of
-- the time at 100,000 projects.)
CREATE OR REPLACE FUNCTION credits._due_projects(OUT used_up_ids bigint[], OUT used_up_accrued credits.credits[],
                                      OUT recharge_ids bigint[], OUT recharge_accrued credits.credits[])
    LANGUAGE sql STABLE
    SET work_mem = '64MB' SET enable_hashagg = off SET enable_nestloop = off
BEGIN ATOMIC
    WITH positions AS (
        SELECT a.project_id, a.balance, a.depleted, u.accumulating,
               coalesce(u.accumulating, '0'::credits.credits) AS accrued,
               coalesce(r.enabled AND r.armed, false) AS recharging, r.threshold
          FROM credits.accounts a
          LEFT JOIN credits.accumulating_by_project u ON u.project_id = a.project_id
          LEFT JOIN credits.auto_recharge r ON r.project_id = a.project_id
         WHERE u.project_id IS NOT NULL OR (r.enabled AND r.armed)),
    flagged AS (
        SELECT p.project_id, p.accrued,
               NOT p.depleted AND credits._used_up(p.balance, p.accumulating) AS used_up,
               p.recharging AND greatest(p.balance - p.accrued, '0'::credits.credits) < p.threshold AS recharge
          FROM positions p)
    SELECT coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.used_up), '{}'),
           coalesce(array_agg(f.accrued ORDER BY f.project_id) FILTER (WHERE f.used_up), '{}'),
           coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.recharge), '{}'),
           coalesce(array_agg(f.accrued ORDER BY f.project_id) FILTER (WHERE f.recharge), '{}')
      FROM flagged f;
END;

-- Cuts off the projects of used_up_ids (with their accrued usage, used_up_accrued) whose
-- accrued usage has used up the balance, one by one in project order (tested again on the
-- locked row: a deposit may have committed since), and requests the auto-recharges due among
-- recharge_ids (credits._start_auto_recharges).  An account locked by another transaction is
-- passed over (skipped) and left for a later run.  Returns the projects acted on and those
-- skipped.
CREATE FUNCTION credits._cut_off_and_recharge(used_up_ids bigint[], used_up_accrued credits.credits[],
                                              recharge_ids bigint[], recharge_accrued credits.credits[],
                                              OUT acted bigint[], OUT skipped bigint[])
    LANGUAGE plpgsql AS $$
DECLARE
    c record;
    locked bigint[] := '{}';
    cut_off bigint[] := '{}';
BEGIN
    FOR c IN SELECT u.project_id, u.accumulating
               FROM unnest(used_up_ids, used_up_accrued) AS u(project_id, accumulating)
               JOIN (SELECT a.project_id FROM credits.accounts a
                      WHERE a.project_id = ANY (used_up_ids) AND NOT a.depleted
                      ORDER BY a.project_id FOR NO KEY UPDATE SKIP LOCKED) AS l USING (project_id)
              ORDER BY u.project_id
    LOOP
        locked := locked || c.project_id;
        UPDATE credits.accounts a SET depleted = true
         WHERE a.project_id = c.project_id AND NOT a.depleted AND credits._used_up(a.balance, c.accumulating);
        IF FOUND THEN
            cut_off := cut_off || c.project_id;
        END IF;
    END LOOP;
    skipped := ARRAY(SELECT u.project_id FROM unnest(used_up_ids) AS u(project_id)
                      WHERE NOT EXISTS (SELECT FROM unnest(locked) AS l(project_id) WHERE l.project_id = u.project_id)
                        AND NOT EXISTS (SELECT FROM credits.accounts a
                                         WHERE a.project_id = u.project_id AND a.depleted));
    acted := ARRAY(SELECT unnest(cut_off) UNION SELECT unnest(credits._start_auto_recharges(recharge_ids, recharge_accrued)));
END $$;
REVOKE ALL ON FUNCTION credits._cut_off_and_recharge(bigint[], credits.credits[], bigint[], credits.credits[]) FROM PUBLIC;

-- credits._cut_off_and_recharge for all the projects given at once; when that fails (one
-- project's work raised, and with it the batch), project by project, each in a subtransaction
-- of its own: a project whose work raises is recorded in credits.billing_errors as a failure of
-- run and skipped.  (A lock that cannot be had at once, 55P03, only passes it over.)  Returns
-- the projects acted on, those that failed and those passed over.
CREATE FUNCTION credits._act_on_balances(run text, used_up_ids bigint[], used_up_accrued credits.credits[],
                                         recharge_ids bigint[], recharge_accrued credits.credits[],
                                         OUT acted bigint[], OUT failed bigint[], OUT skipped bigint[])
    LANGUAGE plpgsql AS $$
DECLARE
    c record;
    one record;
    state text;
    msg text;
BEGIN
    failed := '{}';
    BEGIN
        SELECT * INTO one FROM credits._cut_off_and_recharge(used_up_ids, used_up_accrued, recharge_ids, recharge_accrued);
        acted := one.acted;
        skipped := one.skipped;
        RETURN;
    EXCEPTION
        -- (the whole transaction's: no retry in it can succeed)
        WHEN serialization_failure OR deadlock_detected THEN RAISE;
        WHEN OTHERS THEN NULL;
    END;
    acted := '{}';
    skipped := '{}';
    FOR c IN SELECT project_id, u.accrued AS used_up, r.accrued AS recharge
               FROM unnest(used_up_ids, used_up_accrued) AS u(project_id, accrued)
               FULL JOIN unnest(recharge_ids, recharge_accrued) AS r(project_id, accrued) USING (project_id)
              ORDER BY project_id
    LOOP
        BEGIN
            SELECT * INTO one FROM credits._cut_off_and_recharge(
                CASE WHEN c.used_up IS NULL THEN '{}' ELSE ARRAY[c.project_id] END,
                CASE WHEN c.used_up IS NULL THEN '{}' ELSE ARRAY[c.used_up] END,
                CASE WHEN c.recharge IS NULL THEN '{}' ELSE ARRAY[c.project_id] END,
                CASE WHEN c.recharge IS NULL THEN '{}' ELSE ARRAY[c.recharge] END);
            acted := acted || one.acted;
            skipped := skipped || one.skipped;
        EXCEPTION
            WHEN serialization_failure OR deadlock_detected THEN RAISE;
            WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
                IF state = '55P03' THEN
                    skipped := skipped || c.project_id;
                ELSE
                    PERFORM credits._record_billing_error(c.project_id, run, state, msg);
                    failed := failed || c.project_id;
                END IF;
        END;
    END LOOP;
END $$;

REVOKE ALL ON FUNCTION credits._act_on_balances(text, bigint[], credits.credits[], bigint[], credits.credits[]) FROM PUBLIC;

-- Cuts off every project whose accrued usage has used up its available balance (the balance
-- itself is still positive: deductions cut off the ones that reach zero), then starts the
-- auto-recharges that are due.  Returns the number of projects acted on (cut off, or
-- recharge requested, or both).  A project whose account is locked waits for a later run;
-- one whose work fails is skipped and listed in credits.billing_errors until a run bills it
-- again.
CREATE OR REPLACE FUNCTION credits.run_balance_checks() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp SET jit = off AS $$
DECLARE
    at timestamptz;
    due record;
    done record;
BEGIN
    PERFORM credits._lock_periodic_runs();
    at := credits.now();
    PERFORM credits._fold_usage_events(at);
    -- Both lists from one computation of the accrued usage (the cut-off books live usage into
    -- usage transactions, which leaves each project's total as it was).
    SELECT * INTO due FROM credits._due_projects();
    SELECT * INTO done FROM credits._act_on_balances('run_balance_checks', due.used_up_ids, due.used_up_accrued,
                                                     due.recharge_ids, due.recharge_accrued);
    -- (billed again: checked in this run without failing)
    DELETE FROM credits.billing_failures f
     WHERE f.run = 'run_balance_checks' AND f.project_id <> ALL (done.failed || done.skipped);
    RETURN cardinality(done.acted);
END $$;
