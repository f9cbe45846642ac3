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
-- Spending limits, alerts and volume retention (install sources: 61_spending_controls.sql,
-- 62_limits.sql, 63_alerts.sql, 64_spending_checks.sql, 65_volume_retention.sql,
-- 66_spending_overview.sql, and the hooks in 33_deposits.sql, 42_resources.sql,
-- 44_zero_balance.sql, 50_periodic.sql, 90_roles.sql).
-- ---------------------------------------------------------------------------------------------

-- The outbox takes the new event kinds.
ALTER TABLE credits.events DROP CONSTRAINT events_kind_check;
ALTER TABLE credits.events ADD CONSTRAINT events_kind_check CHECK (kind IN ('charge_requested',
                       'instance_terminated', 'volume_inaccessible', 'volume_available', 'balance_depleted',
                       -- spending controls and volume retention (sql/install/6x_*.sql)
                       'budget_reached', 'instance_stopped', 'balance_low', 'runway_low',
                       'balance_recovered', 'volume_deletion_warning', 'volume_deleted'));

-- 61_spending_controls.sql
-- ---------------------------------------------------------------------------------------------
-- Spending controls: the limits and alerts a project set (credits.configure_limits,
-- credits.configure_alerts), what they have already announced, and where each watched
-- project stands: available balance, burn rate, and the charges of the current UTC day and
-- month.  62_limits.sql refuses starts, 64_spending_checks.sql queues the events and stops
-- instances, 66_spending_overview.sql shows it.
-- ---------------------------------------------------------------------------------------------

-- One row per project with limits or alerts set (null: that limit or alert is off), and what
-- has been announced: the period whose budget_reached event is queued, and whether the
-- balance and the runway are below their alert lines since the last event about them.
CREATE TABLE credits.spending_controls (
    project_id      bigint PRIMARY KEY REFERENCES credits.accounts,
    max_burn_rate   credits.credits CHECK (max_burn_rate > '0'::credits.credits),
    min_runway      interval CHECK (min_runway > interval '0'),
    daily_budget    credits.credits CHECK (daily_budget > '0'::credits.credits),
    monthly_budget  credits.credits CHECK (monthly_budget > '0'::credits.credits),
    on_budget       text NOT NULL DEFAULT 'alert' CHECK (on_budget IN ('alert', 'stop')),
    below_balance   credits.credits CHECK (below_balance > '0'::credits.credits),
    below_runway    interval CHECK (below_runway > interval '0'),
    -- Start of the UTC day / month whose budget_reached event is queued (null: none yet).
    daily_reached   timestamptz,
    monthly_reached timestamptz,
    -- The alert lines crossed, as last announced (balance_low / runway_low queued).
    balance_low     boolean NOT NULL DEFAULT false,
    runway_low      boolean NOT NULL DEFAULT false,
    updated_at      timestamptz NOT NULL
);

-- The completed charges of each watched project in its current UTC day and month, counted
-- up to counted_until (the project's accounts.deducted_until when counted): a budget check
-- then reads only the hours deducted since, not the whole month, for every project each
-- minute.  Kept apart from spending_controls so that refreshing it never locks a project's
-- controls.  Rows come and go with spending_controls.
CREATE TABLE credits.spending_totals (
    project_id    bigint PRIMARY KEY REFERENCES credits.accounts,
    counted_until timestamptz NOT NULL DEFAULT '-infinity',
    day_start     timestamptz,
    day_spent     credits.credits NOT NULL DEFAULT '0',
    month_start   timestamptz,
    month_spent   credits.credits NOT NULL DEFAULT '0'
) WITH (fillfactor = 50);

-- Where each watched project among ids stands now (credits.now()): its balance, usage accrued
-- and not yet deducted, available balance, burn rate (as balance_overview counts it), and the
-- charges (collected and uncollected: the exact accrual) of usage hours beginning in the
-- current UTC day and month: the completed ones (completed_*: spending_totals plus the hours
-- deducted since it was counted, probed hour by hour in the usage index) and the accumulating
-- ones.  ids reaches every part as project_id = ANY (ids), so one project (ARRAY[p]) is read
-- through its indexes, and the periodic runs read the watched projects only, each part once
-- for all of them.  (A set-returning SQL function, not strict: the planner inlines it.)
CREATE FUNCTION credits._spending_positions(ids bigint[])
    RETURNS TABLE (project_id bigint, balance credits.credits, accumulating credits.credits,
                   available_balance credits.credits, burn_rate credits.credits,
                   spent_today credits.credits, spent_this_month credits.credits,
                   day_start timestamptz, month_start timestamptz, deducted_until timestamptz,
                   completed_today credits.credits, completed_this_month credits.credits)
    LANGUAGE sql STABLE
BEGIN ATOMIC
SELECT c.project_id, a.balance,
       coalesce(ip.accumulating, '0'::credits.credits) AS accumulating,
       credits._available(a.balance, ip.accumulating) AS available_balance,
       coalesce(br.burn_rate, '0'::credits.credits) AS burn_rate,
       cc.completed_today + coalesce(ip.today, '0'::credits.credits) AS spent_today,
       cc.completed_this_month + coalesce(ip.this_month, '0'::credits.credits) AS spent_this_month,
       cc.day_start, cc.month_start, a.deducted_until, cc.completed_today, cc.completed_this_month
  FROM credits.spending_controls c
  JOIN credits.accounts a ON a.project_id = c.project_id
  JOIN (SELECT s.project_id, p.day_start, p.month_start,
               CASE WHEN s.day_start = p.day_start THEN s.day_spent ELSE '0'::credits.credits END
                   + coalesce(h.day_charges, '0'::credits.credits) AS completed_today,
               CASE WHEN s.month_start = p.month_start THEN s.month_spent ELSE '0'::credits.credits END
                   + coalesce(h.month_charges, '0'::credits.credits) AS completed_this_month
          FROM credits.spending_totals s
          JOIN credits.accounts sa ON sa.project_id = s.project_id
          CROSS JOIN (SELECT date_trunc('day', credits.now(), 'UTC') AS day_start,
                             date_trunc('month', credits.now(), 'UTC') AS month_start) AS p
          -- (the hours not in spending_totals yet: those of the month, among which the day's)
          CROSS JOIN LATERAL (
              SELECT credits._usage_total(credits._accrued_amount(t.accrued_units))
                         FILTER (WHERE t.usage_hour >= p.day_start
                                   AND (t.usage_hour >= s.counted_until
                                        OR s.day_start IS DISTINCT FROM p.day_start)) AS day_charges,
                     credits._usage_total(credits._accrued_amount(t.accrued_units)) AS month_charges
                FROM generate_series(CASE WHEN s.month_start = p.month_start
                                          THEN greatest(s.counted_until, p.month_start) ELSE p.month_start END,
                                     sa.deducted_until - interval '1 hour', interval '1 hour') AS g(usage_hour)
                -- (OFFSET 0: probed hour by hour, never joined to all the project's rows)
                CROSS JOIN LATERAL (SELECT t.usage_hour, t.accrued_units FROM credits.transactions t
                                     WHERE t.usage_hour = g.usage_hour AND t.project_id = s.project_id
                                       AND t.type = 'usage' AND t.status = 'completed' OFFSET 0) AS t) AS h
         WHERE s.project_id = ANY (ids)) AS cc ON cc.project_id = c.project_id
  LEFT JOIN (SELECT u.project_id, -credits._usage_total(u.amount) AS accumulating,
                    -credits._usage_total(u.amount)
                        FILTER (WHERE u.usage_hour >= date_trunc('day', credits.now(), 'UTC')) AS today,
                    -credits._usage_total(u.amount)
                        FILTER (WHERE u.usage_hour >= date_trunc('month', credits.now(), 'UTC')) AS this_month
               FROM credits.usage_in_progress u WHERE u.project_id = ANY (ids)
              GROUP BY u.project_id) AS ip ON ip.project_id = c.project_id
  LEFT JOIN (SELECT b.project_id, credits.burn_rate(b.amount, interval '1 hour') AS burn_rate
               FROM credits._burn_rate_inputs b WHERE b.project_id = ANY (ids)
              GROUP BY b.project_id) AS br ON br.project_id = c.project_id
 WHERE c.project_id = ANY (ids);
END;

-- The watched projects' ids, in order: what the periodic runs pass to _spending_positions.
CREATE FUNCTION credits._watched_projects() RETURNS bigint[]
    LANGUAGE sql STABLE
    RETURN ARRAY(SELECT c.project_id FROM credits.spending_controls c ORDER BY c.project_id);

-- Has every project whose usage_rollup holds API usage for an hour its spending_totals already
-- counted counted again from the start of the month.  (A call that committed after its hour
-- was deducted, for a product with no usage in that hour, is charged in that hour: the next
-- deduction completes an hour the totals had passed.  Rare; a recount reads the project's
-- month once.)  Called after the fold and before the deduction, and by _count_spending.
CREATE FUNCTION credits._recount_late_usage() RETURNS void
    LANGUAGE sql AS $$
    UPDATE credits.spending_totals s SET counted_until = '-infinity', day_start = NULL, month_start = NULL
     WHERE s.project_id IN (SELECT u.project_id FROM credits.usage_rollup u
                              JOIN credits.spending_totals t ON t.project_id = u.project_id
                             WHERE u.usage_hour < t.counted_until);
$$;

-- Brings spending_totals up to each watched project's deducted hours and to the current UTC
-- day and month: only projects deducted since they were counted, or whose period changed,
-- are rewritten.  Called by the periodic runs, which hold the periodic-run lock; rows locked
-- by another transaction are left for the next run.
CREATE FUNCTION credits._count_spending() RETURNS void
    LANGUAGE sql AS $$
    SELECT credits._recount_late_usage();
    WITH due AS (
        SELECT p.project_id, p.deducted_until, p.day_start, p.month_start,
               p.completed_today, p.completed_this_month
          FROM credits._spending_positions(credits._watched_projects()) p
          JOIN credits.spending_totals s ON s.project_id = p.project_id
         WHERE p.deducted_until > s.counted_until
            OR s.day_start IS DISTINCT FROM p.day_start OR s.month_start IS DISTINCT FROM p.month_start),
    locked AS (
        SELECT s.project_id FROM credits.spending_totals s
         WHERE s.project_id IN (SELECT d.project_id FROM due d)
         ORDER BY s.project_id FOR UPDATE SKIP LOCKED)
    UPDATE credits.spending_totals s
       SET counted_until = d.deducted_until, day_start = d.day_start, day_spent = d.completed_today,
           month_start = d.month_start, month_spent = d.completed_this_month
      FROM due d
     WHERE s.project_id = d.project_id AND s.project_id IN (SELECT l.project_id FROM locked l);
$$;

-- 62_limits.sql
-- ---------------------------------------------------------------------------------------------
-- Spending limits: a ceiling on the burn rate, a minimum runway for new resources, and daily
-- and monthly budgets that alert or stop.  Refusals happen in the start itself
-- (credits._check_start_limits, called by credits._activate); budget events and stops in the
-- periodic runs (64_spending_checks.sql).  Limits only add refusals and stops: the zero-balance
-- rule is unchanged.
-- ---------------------------------------------------------------------------------------------

-- Raises 22023 unless value is null (off) or a positive interval.
CREATE FUNCTION credits._require_positive_interval(arg_name text, value interval) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF value IS NOT NULL AND extract(epoch FROM value) <= 0 THEN
        RAISE EXCEPTION '% must be a positive interval, got %', arg_name, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- Raises 22023 unless amount is null (off) or positive (at most one billion credits).
CREATE FUNCTION credits._require_positive_or_null(arg_name text, amount credits.credits) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF amount IS NOT NULL THEN
        PERFORM credits._require_positive(arg_name, amount);
    END IF;
END $$;

-- Saves the project's spending controls row (creating it and its totals row), or removes
-- both when neither limits nor alerts are left.  The caller holds the account's lock.
CREATE FUNCTION credits._save_spending_controls(project_id bigint, c credits.spending_controls) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF num_nonnulls(c.max_burn_rate, c.min_runway, c.daily_budget, c.monthly_budget,
                    c.below_balance, c.below_runway) = 0 THEN
        DELETE FROM credits.spending_controls x WHERE x.project_id = _save_spending_controls.project_id;
        DELETE FROM credits.spending_totals x WHERE x.project_id = _save_spending_controls.project_id;
        RETURN;
    END IF;
    INSERT INTO credits.spending_controls AS x
    SELECT (c).*
    ON CONFLICT ON CONSTRAINT spending_controls_pkey DO UPDATE
       SET max_burn_rate = excluded.max_burn_rate, min_runway = excluded.min_runway,
           daily_budget = excluded.daily_budget, monthly_budget = excluded.monthly_budget,
           on_budget = excluded.on_budget, below_balance = excluded.below_balance,
           below_runway = excluded.below_runway, daily_reached = excluded.daily_reached,
           monthly_reached = excluded.monthly_reached, balance_low = excluded.balance_low,
           runway_low = excluded.runway_low, updated_at = excluded.updated_at;
    INSERT INTO credits.spending_totals (project_id) VALUES (project_id) ON CONFLICT DO NOTHING;
END $$;

-- Sets the project's spending limits; each call states the whole configuration (null: that
-- limit is off).  A budget whose amount changes may announce itself again in the same period.
CREATE FUNCTION credits.configure_limits(project_id bigint, max_burn_rate credits.credits DEFAULT NULL,
                                         min_runway interval DEFAULT NULL,
                                         daily_budget credits.credits DEFAULT NULL,
                                         monthly_budget credits.credits DEFAULT NULL,
                                         on_budget text DEFAULT 'alert') RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    c credits.spending_controls;
BEGIN
    PERFORM credits._lock_account(project_id);
    PERFORM credits._require_positive_or_null('max_burn_rate', max_burn_rate);
    PERFORM credits._require_positive_interval('min_runway', min_runway);
    PERFORM credits._require_positive_or_null('daily_budget', daily_budget);
    PERFORM credits._require_positive_or_null('monthly_budget', monthly_budget);
    PERFORM credits._require('on_budget', on_budget IS NULL);
    IF on_budget NOT IN ('alert', 'stop') THEN
        RAISE EXCEPTION 'on_budget must be ''alert'' or ''stop'', got "%"', left(on_budget, 20)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT * INTO c FROM credits.spending_controls x WHERE x.project_id = configure_limits.project_id FOR UPDATE;
    c.project_id := project_id;
    c.daily_reached := CASE WHEN c.daily_budget = daily_budget THEN c.daily_reached END;
    c.monthly_reached := CASE WHEN c.monthly_budget = monthly_budget THEN c.monthly_reached END;
    c.max_burn_rate := max_burn_rate;
    c.min_runway := min_runway;
    c.daily_budget := daily_budget;
    c.monthly_budget := monthly_budget;
    c.on_budget := on_budget;
    c.balance_low := coalesce(c.balance_low, false);
    c.runway_low := coalesce(c.runway_low, false);
    c.updated_at := credits.now();
    PERFORM credits._save_spending_controls(project_id, c);
    -- (a budget already reached is announced, and acted on, now)
    PERFORM credits._check_spending(project_id);
END $$;

-- Refuses (55000) a start, attach or rate change of project_id's resource to rate_per_hour
-- (old_rate: its rate while it is billing, else null) that breaks a spending limit: the rates
-- of running instances and accessible volumes above max_burn_rate; an available balance that
-- does not cover the new burn rate for min_runway; an instance start while a budget with
-- on_budget 'stop' is reached.  A change that lowers the rate is never refused.  Called by
-- credits._activate after it locked the account, before it writes anything; it locks the
-- project's controls row, so that concurrent starts of one project check one after the other,
-- each seeing what the one before started.  Under on_budget 'alert' a start that finds a
-- budget reached queues its budget_reached event.
CREATE FUNCTION credits._check_start_limits(project_id bigint, resource_id text, kind text,
                                            rate_per_hour credits.credits, old_rate credits.credits)
    RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    c credits.spending_controls;
    pos record;
    rates credits.credits;
    new_burn credits.credits;
    raises boolean := rate_per_hour > coalesce(old_rate, '0'::credits.credits);
BEGIN
    SELECT * INTO c FROM credits.spending_controls x
     WHERE x.project_id = _check_start_limits.project_id FOR UPDATE;
    IF NOT FOUND OR num_nonnulls(c.max_burn_rate, c.min_runway, c.daily_budget, c.monthly_budget) = 0 THEN
        RETURN;
    END IF;

    IF c.max_burn_rate IS NOT NULL AND raises THEN
        SELECT coalesce(sum(r.rate_per_hour), '0'::credits.credits) INTO rates FROM credits.resources r
         WHERE r.project_id = _check_start_limits.project_id AND r.state IN ('running', 'available')
           AND r.resource_id <> _check_start_limits.resource_id;
        IF rates + rate_per_hour > c.max_burn_rate THEN
            RAISE EXCEPTION 'project % would burn % per hour, above its max_burn_rate of %',
                project_id, rates + rate_per_hour, c.max_burn_rate
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('Running instances and accessible volumes burn %s per hour; %s %s adds %s.',
                                      rates, kind, resource_id, rate_per_hour),
                      HINT = 'Stop something first, or raise the limit with credits.configure_limits().';
        END IF;
    END IF;

    IF c.min_runway IS NULL AND c.daily_budget IS NULL AND c.monthly_budget IS NULL THEN
        RETURN;
    END IF;
    SELECT * INTO pos FROM credits._spending_positions(ARRAY[project_id]);

    IF c.min_runway IS NOT NULL AND raises THEN
        new_burn := pos.burn_rate - coalesce(old_rate, '0'::credits.credits) + rate_per_hour;
        IF credits._below_runway(pos.available_balance, new_burn, c.min_runway) THEN
            RAISE EXCEPTION 'project % would have less than its min_runway of % left', project_id, c.min_runway
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('The available balance of %s lasts %s h at the new burn rate of %s per hour.',
                                      pos.available_balance, round(pos.available_balance / new_burn, 2), new_burn),
                      HINT = 'Add credits first, or lower min_runway with credits.configure_limits().';
        END IF;
    END IF;

    IF kind = 'instance' AND c.on_budget = 'stop' AND raises
       AND (credits._budget_hit(pos.spent_today, c.daily_budget)
           OR credits._budget_hit(pos.spent_this_month, c.monthly_budget)) THEN
        RAISE EXCEPTION 'project % has reached its % budget', project_id,
            CASE WHEN credits._budget_hit(pos.spent_today, c.daily_budget) THEN 'daily' ELSE 'monthly' END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Spent today %s of a daily budget of %s; this month %s of a monthly budget of %s.',
                                  pos.spent_today, coalesce(c.daily_budget::text, 'none'),
                                  pos.spent_this_month, coalesce(c.monthly_budget::text, 'none')),
                  HINT = 'Instances may start again when the UTC period ends or the budget is raised.';
    END IF;
    IF credits._budget_hit(pos.spent_today, c.daily_budget) AND c.daily_reached IS DISTINCT FROM pos.day_start
       OR credits._budget_hit(pos.spent_this_month, c.monthly_budget)
          AND c.monthly_reached IS DISTINCT FROM pos.month_start THEN
        PERFORM credits._act_on_spending(ARRAY[project_id]);
    END IF;
END $$;

COMMENT ON FUNCTION credits.configure_limits(bigint, credits.credits, interval, credits.credits, credits.credits, text) IS
    'Sets a project''s spending limits, the whole configuration at once (null: off): max_burn_rate and '
    'min_runway refuse starts (55000); daily_budget and monthly_budget queue budget_reached once per UTC '
    'period, and with on_budget ''stop'' also stop running instances and refuse starts until the period '
    'ends or the budget is raised.';

-- 63_alerts.sql
-- ---------------------------------------------------------------------------------------------
-- Alerts: balance_low when the available balance falls below below_balance, runway_low when
-- hours_remaining falls below below_runway, each once per crossing, and balance_recovered
-- once when, after an alert, both are clear again.  Checked by run_balance_checks, the hourly
-- deduction and deposit completion (64_spending_checks.sql).
-- ---------------------------------------------------------------------------------------------

-- Sets the project's alert lines; each call states the whole configuration (null: off).
-- Saving them keeps what was announced: a line still crossed is not announced again.
CREATE FUNCTION credits.configure_alerts(project_id bigint, below_balance credits.credits DEFAULT NULL,
                                         below_runway interval DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    c credits.spending_controls;
BEGIN
    PERFORM credits._lock_account(project_id);
    PERFORM credits._require_positive_or_null('below_balance', below_balance);
    PERFORM credits._require_positive_interval('below_runway', below_runway);

    SELECT * INTO c FROM credits.spending_controls x WHERE x.project_id = configure_alerts.project_id FOR UPDATE;
    c.project_id := project_id;
    c.on_budget := coalesce(c.on_budget, 'alert');
    c.below_balance := below_balance;
    c.below_runway := below_runway;
    c.balance_low := coalesce(c.balance_low AND below_balance IS NOT NULL, false);
    c.runway_low := coalesce(c.runway_low AND below_runway IS NOT NULL, false);
    c.updated_at := credits.now();
    PERFORM credits._save_spending_controls(project_id, c);
    -- (a line already crossed is announced now, not at the next check)
    PERFORM credits._check_spending(project_id);
END $$;

COMMENT ON FUNCTION credits.configure_alerts(bigint, credits.credits, interval) IS
    'Sets a project''s alert lines (null: off): balance_low below below_balance, runway_low below '
    'below_runway of hours remaining, each queued once per crossing, and balance_recovered once when both '
    'are clear again.';

-- 64_spending_checks.sql
-- ---------------------------------------------------------------------------------------------
-- Acting on spending controls: budget_reached (once per budget and UTC period), the stop of
-- running instances under on_budget 'stop', and the alerts balance_low, runway_low (once per
-- crossing) and balance_recovered.  The periodic runs check every watched project set-based
-- (credits._watch_spending); a deposit completion, a start and a configuration change check
-- their own project (credits._check_spending).
--
-- Exactly once: the decision is taken and written in one statement that holds the account
-- (FOR SHARE) and the controls row (FOR UPDATE) of each project it acts on, reading the
-- balance and the flags as they are once locked, so a deposit completing or a start running at
-- the same time is either seen whole or waited for; a project locked by another transaction is
-- left for the next run.
-- ---------------------------------------------------------------------------------------------

-- The alert and budget lines, each written once.
CREATE FUNCTION credits._below_balance(available credits.credits, below_balance credits.credits) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN coalesce(available < below_balance, false);
-- hours_remaining (available / burn_rate) below below_runway; never with a zero burn rate.
CREATE FUNCTION credits._below_runway(available credits.credits, burn_rate credits.credits,
                                      below_runway interval) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN coalesce(burn_rate > '0'::credits.credits
                    AND available::numeric * 3600 < burn_rate::numeric * extract(epoch FROM below_runway), false);
CREATE FUNCTION credits._budget_hit(spent credits.credits, budget credits.credits) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN coalesce(spent >= budget, false);

-- hours_remaining as balance_overview shows it (null when nothing burns).
CREATE FUNCTION credits._hours_remaining(available credits.credits, burn_rate credits.credits) RETURNS numeric
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN burn_rate > '0'::credits.credits THEN round(available / burn_rate, 2) END;

-- Stops, at time at, the running instances of the projects given (each with the budget that
-- stopped it), in three statements for all of them: their time is booked up to at as
-- stop_instance books it (credits._book_usage, here for many resources at once), they become
-- stopped, and instance_stopped is queued for each.  (Per instance, each booking's statement
-- cost as much as reading every account.)  The caller holds the projects' accounts.
CREATE FUNCTION credits._stop_for_budget(project_ids bigint[], budgets text[], at timestamptz)
    RETURNS void LANGUAGE sql AS $$
    WITH stopping AS (
        SELECT r.project_id, r.resource_id, r.rate_per_hour, r.accrued_until, x.budget
          FROM unnest(project_ids, budgets) AS x(project_id, budget)
          JOIN credits.resources r ON r.project_id = x.project_id
         WHERE r.kind = 'instance' AND r.state = 'running'
         ORDER BY r.project_id, r.resource_id
         FOR UPDATE OF r),
    booked AS (
        INSERT INTO credits.transactions AS t (project_id, type, status, amount, created_at, description,
                                               resource_id, usage_hour, accrued_units)
        SELECT x.project_id, 'usage', 'accumulating', -credits._accrued_amount(s.units), s.usage_hour,
               credits._describe('instance', x.resource_id), x.resource_id, s.usage_hour, s.units
          FROM stopping x
          JOIN credits.accounts a ON a.project_id = x.project_id
          CROSS JOIN LATERAL credits._hour_segments(x.rate_per_hour, greatest(x.accrued_until, a.deducted_until), at) AS s
        ON CONFLICT (project_id, usage_hour, resource_id) WHERE type = 'usage' DO UPDATE
           SET accrued_units = t.accrued_units + excluded.accrued_units,
               amount = -credits._accrued_amount(t.accrued_units + excluded.accrued_units)),
    stopped AS (
        UPDATE credits.resources r SET state = 'stopped', state_since = at, accrued_until = NULL
          FROM stopping x
         WHERE r.project_id = x.project_id AND r.resource_id = x.resource_id
        RETURNING r.project_id, r.resource_id, x.budget)
    INSERT INTO credits.events (project_id, kind, resource_id, transaction_id, payload, created_at)
    SELECT x.project_id, 'instance_stopped', x.resource_id, NULL,
           jsonb_build_object('resource_id', x.resource_id, 'kind', 'instance', 'reason', 'budget_reached',
                              'budget', x.budget, 'at', at), at
      FROM stopped x ORDER BY x.project_id, x.resource_id;
$$;

-- Acts on the watched projects among ids: queues the events their controls call for, records
-- them, and stops the running instances of projects over a budget with on_budget 'stop'.  The
-- balance is read again under the account's lock.  Returns the projects acted on.
CREATE FUNCTION credits._act_on_spending(ids bigint[]) RETURNS bigint[]
    LANGUAGE plpgsql AS $$
DECLARE
    at timestamptz := credits.now();
    queued_ids bigint[];
    stop_ids bigint[];
    stop_budgets text[];
BEGIN
    WITH pos AS (
        SELECT * FROM credits._spending_positions(ids)),
    locked_accounts AS (
        SELECT a.project_id, a.balance FROM credits.accounts a
         WHERE a.project_id = ANY (ids)
         ORDER BY a.project_id FOR SHARE OF a SKIP LOCKED),
    locked AS (
        SELECT c.*, la.balance FROM credits.spending_controls c JOIN locked_accounts la USING (project_id)
         ORDER BY c.project_id FOR UPDATE OF c SKIP LOCKED),
    judged AS (
        SELECT l.project_id, l.balance_low AS was_balance_low, l.runway_low AS was_runway_low,
               l.daily_reached, l.monthly_reached, l.daily_budget, l.monthly_budget, l.on_budget,
               l.below_balance, l.below_runway, v.available, p.burn_rate, p.spent_today,
               p.spent_this_month, p.day_start, p.month_start,
               credits._below_balance(v.available, l.below_balance) AS balance_low,
               credits._below_runway(v.available, p.burn_rate, l.below_runway) AS runway_low,
               credits._budget_hit(p.spent_today, l.daily_budget) AS daily_hit,
               credits._budget_hit(p.spent_this_month, l.monthly_budget) AS monthly_hit
          FROM locked l JOIN pos p USING (project_id)
          CROSS JOIN LATERAL (SELECT credits._available(l.balance, p.accumulating) AS available) AS v),
    changed AS (
        UPDATE credits.spending_controls c
           SET balance_low = j.balance_low, runway_low = j.runway_low,
               daily_reached = CASE WHEN j.daily_hit THEN j.day_start ELSE c.daily_reached END,
               monthly_reached = CASE WHEN j.monthly_hit THEN j.month_start ELSE c.monthly_reached END
          FROM judged j
         WHERE c.project_id = j.project_id
           AND (c.balance_low <> j.balance_low OR c.runway_low <> j.runway_low
                OR (j.daily_hit AND c.daily_reached IS DISTINCT FROM j.day_start)
                OR (j.monthly_hit AND c.monthly_reached IS DISTINCT FROM j.month_start))
        RETURNING j.*),
    queued AS (
        INSERT INTO credits.events (project_id, kind, resource_id, transaction_id, payload, created_at)
        SELECT ch.project_id, e.kind, NULL, NULL, e.payload || jsonb_build_object('at', at), at
          FROM changed ch
          CROSS JOIN LATERAL (VALUES
              (1, 'budget_reached', ch.daily_hit AND ch.daily_reached IS DISTINCT FROM ch.day_start,
               jsonb_build_object('budget', 'daily', 'limit', ch.daily_budget::text,
                                  'spent', ch.spent_today::text, 'period_start', ch.day_start,
                                  'on_budget', ch.on_budget)),
              (2, 'budget_reached', ch.monthly_hit AND ch.monthly_reached IS DISTINCT FROM ch.month_start,
               jsonb_build_object('budget', 'monthly', 'limit', ch.monthly_budget::text,
                                  'spent', ch.spent_this_month::text, 'period_start', ch.month_start,
                                  'on_budget', ch.on_budget)),
              (3, 'balance_low', ch.balance_low AND NOT ch.was_balance_low,
               jsonb_build_object('available_balance', ch.available::text,
                                  'below_balance', ch.below_balance::text)),
              (4, 'runway_low', ch.runway_low AND NOT ch.was_runway_low,
               jsonb_build_object('available_balance', ch.available::text, 'burn_rate', ch.burn_rate::text,
                                  'hours_remaining', credits._hours_remaining(ch.available, ch.burn_rate),
                                  'below_runway', ch.below_runway::text)),
              (5, 'balance_recovered',
               (ch.was_balance_low OR ch.was_runway_low) AND NOT ch.balance_low AND NOT ch.runway_low,
               jsonb_build_object('available_balance', ch.available::text,
                                  'hours_remaining', credits._hours_remaining(ch.available, ch.burn_rate))))
              AS e(n, kind, due, payload)
         WHERE e.due
         ORDER BY ch.project_id, e.n
        RETURNING project_id)
    SELECT (SELECT coalesce(array_agg(DISTINCT q.project_id), '{}') FROM queued q),
           coalesce(array_agg(j.project_id ORDER BY j.project_id), '{}'),
           coalesce(array_agg(CASE WHEN j.daily_hit THEN 'daily' ELSE 'monthly' END ORDER BY j.project_id), '{}')
      INTO queued_ids, stop_ids, stop_budgets
      FROM judged j
     WHERE j.on_budget = 'stop' AND (j.daily_hit OR j.monthly_hit);
    IF cardinality(queued_ids) > 0 THEN
        PERFORM pg_notify('credits_events', '');
    END IF;

    -- (a new statement, after the locks: an instance a start committed meanwhile is stopped too)
    SELECT coalesce(array_agg(x.project_id ORDER BY x.project_id), '{}'), coalesce(array_agg(x.budget ORDER BY x.project_id), '{}')
      INTO stop_ids, stop_budgets
      FROM unnest(stop_ids, stop_budgets) AS x(project_id, budget)
     WHERE EXISTS (SELECT FROM credits.resources r
                    WHERE r.project_id = x.project_id AND r.kind = 'instance' AND r.state = 'running');
    IF cardinality(stop_ids) > 0 THEN
        PERFORM credits._stop_for_budget(stop_ids, stop_budgets, at);
        PERFORM pg_notify('credits_events', '');
    END IF;
    RETURN ARRAY(SELECT unnest(queued_ids) UNION SELECT unnest(stop_ids) ORDER BY 1);
END $$;

-- Checks one project's spending controls now (a deposit completed, a configuration saved).
CREATE FUNCTION credits._check_spending(project_id bigint) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM credits.spending_controls c WHERE c.project_id = _check_spending.project_id) THEN
        PERFORM credits._act_on_spending(ARRAY[project_id]);
    END IF;
END $$;

-- Checks every watched project, set-based: counts the hours deducted since the last run,
-- computes every position once, and acts on the projects where something is due (an alert
-- line crossed either way, a budget reached and not yet announced this period, or running
-- instances over a budget that stops).  Returns the projects acted on.  The caller holds the
-- periodic-run lock.  (enable_nestloop = off: the planner expects a few hundred watched
-- projects and loops over each part once per project, recomputing it: at 20,000 projects
-- 10 s instead of 0.1 s.  The per-project probes are lateral and stay loops.)
CREATE FUNCTION credits._watch_spending(at timestamptz) RETURNS bigint[]
    LANGUAGE plpgsql SET enable_nestloop = off AS $$
DECLARE
    due bigint[];
BEGIN
    IF NOT EXISTS (SELECT FROM credits.spending_controls) THEN
        RETURN '{}';
    END IF;
    PERFORM credits._count_spending();
    SELECT array_agg(p.project_id ORDER BY p.project_id) INTO due
      FROM credits._spending_positions(credits._watched_projects()) p
      JOIN credits.spending_controls c ON c.project_id = p.project_id
     WHERE c.balance_low <> credits._below_balance(p.available_balance, c.below_balance)
        OR c.runway_low <> credits._below_runway(p.available_balance, p.burn_rate, c.below_runway)
        OR (credits._budget_hit(p.spent_today, c.daily_budget) AND c.daily_reached IS DISTINCT FROM p.day_start)
        OR (credits._budget_hit(p.spent_this_month, c.monthly_budget)
            AND c.monthly_reached IS DISTINCT FROM p.month_start)
        OR (c.on_budget = 'stop'
            AND (credits._budget_hit(p.spent_today, c.daily_budget)
                 OR credits._budget_hit(p.spent_this_month, c.monthly_budget))
            AND EXISTS (SELECT FROM credits.resources r
                         WHERE r.project_id = p.project_id AND r.kind = 'instance' AND r.state = 'running'));
    IF due IS NULL THEN
        RETURN '{}';
    END IF;
    RETURN credits._act_on_spending(due);
END $$;

-- 65_volume_retention.sql
-- ---------------------------------------------------------------------------------------------
-- Volumes kept at zero balance.  With the setting credits.volume_retention empty (the
-- default) an inaccessible volume is kept until a deposit makes the balance positive again.
-- When it holds an interval, a volume inaccessible that long is deleted by run_balance_checks
-- (state deleted, volume_deleted queued): its volume_inaccessible event carries deletes_at, a
-- volume_deletion_warning is queued 24 hours before (at once when less is left), and a
-- volume is never deleted by the run that warned about it.  A deposit in time makes it
-- available again, as always.
-- ---------------------------------------------------------------------------------------------

-- The superuser-only setting credits.volume_retention as an interval (null when empty).
CREATE FUNCTION credits.volume_retention() RETURNS interval
    AS 'MODULE_PATHNAME', 'credits_volume_retention_interval' LANGUAGE C STABLE PARALLEL SAFE;

-- What the cut-off adds to the event of a resource it makes inaccessible at time at: the
-- volume's deletes_at when volumes are deleted (credits._cut_off).
CREATE FUNCTION credits._retention_payload(kind text, at timestamptz) RETURNS jsonb
    LANGUAGE sql STABLE
    RETURN CASE WHEN kind = 'volume' AND credits.volume_retention() IS NOT NULL
                THEN jsonb_build_object('deletes_at', at + credits.volume_retention())
                ELSE '{}'::jsonb END;

-- The inaccessible volumes, by the time they became so: what the retention run reads.
CREATE INDEX resources_inaccessible ON credits.resources (state_since) WHERE state = 'inaccessible';

-- The deletion warnings queued: one row per volume, for the time it became inaccessible.
CREATE TABLE credits.volume_deletion_warnings (
    project_id         bigint NOT NULL,
    resource_id        text NOT NULL,
    inaccessible_since timestamptz NOT NULL,
    warned_at          timestamptz NOT NULL,
    PRIMARY KEY (project_id, resource_id)
);

-- Deletes the volumes inaccessible for credits.volume_retention whose warning an earlier run
-- queued, then warns about those with less than 24 hours left, set-based, each with its
-- event.  Volumes locked by another transaction (a deposit restoring them) are left for the
-- next run.  Returns the projects acted on.  The caller holds the periodic-run lock.
CREATE FUNCTION credits._enforce_volume_retention(at timestamptz) RETURNS bigint[]
    LANGUAGE plpgsql AS $$
DECLARE
    retention interval := credits.volume_retention();
    deleted bigint[];
    warned bigint[];
BEGIN
    IF retention IS NULL THEN
        RETURN '{}';
    END IF;

    WITH due AS (
        SELECT r.project_id, r.resource_id, r.state_since
          FROM credits.resources r
          JOIN credits.volume_deletion_warnings w
            ON w.project_id = r.project_id AND w.resource_id = r.resource_id
           AND w.inaccessible_since = r.state_since AND w.warned_at < at
         WHERE r.state = 'inaccessible' AND r.state_since <= at - retention
         ORDER BY r.project_id, r.resource_id
         FOR UPDATE OF r SKIP LOCKED),
    gone AS (
        UPDATE credits.resources x SET state = 'deleted', state_since = at
          FROM due d
         WHERE x.project_id = d.project_id AND x.resource_id = d.resource_id
        RETURNING x.project_id, x.resource_id, d.state_since),
    forgotten AS (
        DELETE FROM credits.volume_deletion_warnings w USING gone g
         WHERE w.project_id = g.project_id AND w.resource_id = g.resource_id),
    queued AS (
        INSERT INTO credits.events (project_id, kind, resource_id, transaction_id, payload, created_at)
        SELECT g.project_id, 'volume_deleted', g.resource_id, NULL,
               jsonb_build_object('resource_id', g.resource_id, 'kind', 'volume',
                                  'inaccessible_since', g.state_since, 'at', at), at
          FROM gone g ORDER BY g.project_id, g.resource_id)
    SELECT coalesce(array_agg(DISTINCT g.project_id), '{}') INTO deleted FROM gone g;

    WITH due AS (
        SELECT r.project_id, r.resource_id, r.state_since
          FROM credits.resources r
         WHERE r.state = 'inaccessible' AND r.state_since <= at - retention + interval '24 hours'
           AND NOT EXISTS (SELECT FROM credits.volume_deletion_warnings w
                            WHERE w.project_id = r.project_id AND w.resource_id = r.resource_id
                              AND w.inaccessible_since = r.state_since)
         ORDER BY r.project_id, r.resource_id
         FOR UPDATE OF r SKIP LOCKED),
    marked AS (
        INSERT INTO credits.volume_deletion_warnings AS w (project_id, resource_id, inaccessible_since, warned_at)
        SELECT d.project_id, d.resource_id, d.state_since, at FROM due d
        ON CONFLICT ON CONSTRAINT volume_deletion_warnings_pkey DO UPDATE
           SET inaccessible_since = excluded.inaccessible_since, warned_at = excluded.warned_at
        RETURNING w.project_id, w.resource_id, w.inaccessible_since),
    queued AS (
        INSERT INTO credits.events (project_id, kind, resource_id, transaction_id, payload, created_at)
        SELECT m.project_id, 'volume_deletion_warning', m.resource_id, NULL,
               jsonb_build_object('resource_id', m.resource_id, 'kind', 'volume',
                                  'deletes_at', greatest(m.inaccessible_since + retention, at), 'at', at), at
          FROM marked m ORDER BY m.project_id, m.resource_id)
    SELECT coalesce(array_agg(DISTINCT m.project_id), '{}') INTO warned FROM marked m;

    IF cardinality(deleted) + cardinality(warned) > 0 THEN
        PERFORM pg_notify('credits_events', '');
    END IF;
    RETURN ARRAY(SELECT unnest(deleted) UNION SELECT unnest(warned) ORDER BY 1);
END $$;

COMMENT ON FUNCTION credits.volume_retention() IS
    'The setting credits.volume_retention: how long a volume stays inaccessible at zero balance before '
    'run_balance_checks deletes it; null when empty (kept until the balance is positive again).';

-- 66_spending_overview.sql
-- ---------------------------------------------------------------------------------------------
-- What users read about spending controls: one row per project with limits or alerts set.
-- ---------------------------------------------------------------------------------------------

-- One watched project's position, for the view below.  SECURITY DEFINER: readers may not read
-- the tables (a view's own relations are read with its owner's rights, a function's with the
-- caller's).
CREATE FUNCTION credits._spending_position_of(project_id bigint)
    RETURNS TABLE (available_balance credits.credits, burn_rate credits.credits,
                   spent_today credits.credits, spent_this_month credits.credits,
                   day_start timestamptz, month_start timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
BEGIN ATOMIC
    SELECT p.available_balance, p.burn_rate, p.spent_today, p.spent_this_month, p.day_start, p.month_start
      FROM credits._spending_positions(ARRAY[_spending_position_of.project_id]) AS p;
END;

-- The limits and alert lines of each watched project, what it spent in the current UTC day
-- and month (charges of the usage hours beginning in them, collected or not, accumulating
-- included), whether a budget is reached, and which alert line its position is below now
-- ('balance_low' first, then 'runway_low', else 'ok').  Read with a project_id filter, it
-- reads that project's rows only.
CREATE VIEW credits.spending_overview AS
SELECT c.project_id, c.max_burn_rate, c.min_runway, c.daily_budget, p.spent_today,
       c.monthly_budget, p.spent_this_month, c.on_budget,
       credits._budget_hit(p.spent_today, c.daily_budget)
           OR credits._budget_hit(p.spent_this_month, c.monthly_budget) AS budget_reached,
       CASE WHEN credits._below_balance(p.available_balance, c.below_balance) THEN 'balance_low'
            WHEN credits._below_runway(p.available_balance, p.burn_rate, c.below_runway) THEN 'runway_low'
            ELSE 'ok' END AS alert_state,
       c.below_balance, c.below_runway
  FROM credits.spending_controls c
  CROSS JOIN LATERAL credits._spending_position_of(c.project_id) AS p;

COMMENT ON VIEW credits.spending_overview IS
    'One row per project with spending limits or alerts set: the limits, the charges of the current UTC '
    'day and month, whether a budget is reached, and the alert state now (ok, balance_low, runway_low).';

-- The hooks in the shared functions.
-- pending → completed: raises the balance by the deposit in the same transaction and returns
-- the new balance.  A completed deposit re-arms auto-recharge.
CREATE OR REPLACE FUNCTION credits.complete_deposit(project_id bigint, transaction_id bigint,
                                         invoice_url text DEFAULT NULL) RETURNS credits.credits
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    deposited credits.credits;
    new_balance credits.credits;
BEGIN
    PERFORM credits._require('project_id', project_id IS NULL);
    PERFORM credits._require('transaction_id', transaction_id IS NULL);
    PERFORM credits._require_text('invoice_url', invoice_url, 2048);

    UPDATE credits.transactions t
       SET status = 'completed', completed_at = credits.now(), invoice_url = complete_deposit.invoice_url
     WHERE t.transaction_id = complete_deposit.transaction_id AND t.project_id = complete_deposit.project_id
       AND t.type <> 'usage' AND t.status = 'pending'
    RETURNING t.amount INTO deposited;
    IF NOT FOUND THEN
        PERFORM credits._raise_not_pending(project_id, transaction_id, 'complete');
    END IF;

    UPDATE credits.accounts a SET balance = a.balance + deposited
     WHERE a.project_id = complete_deposit.project_id
    RETURNING a.balance INTO new_balance;
    UPDATE credits.auto_recharge r SET armed = true
     WHERE r.project_id = complete_deposit.project_id AND NOT r.armed;
    PERFORM credits._check_spending(project_id);    -- alerts (64_spending_checks.sql)
    RETURN new_balance;
END $$;

-- Starts billing a resource (start_instance, attach_volume): creates it, restarts a stopped
-- instance, or changes the rate of one already billing (the time so far is booked at the old
-- rate).  Calling it again with the same rate does nothing.
CREATE OR REPLACE FUNCTION credits._activate(project_id bigint, resource_id text, kind text,
                                  rate_per_hour credits.credits) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    active_state text := CASE kind WHEN 'instance' THEN 'running' ELSE 'available' END;
    at timestamptz := credits.now();
    r credits.resources;
BEGIN
    PERFORM credits._require_account(project_id);
    PERFORM credits._require_text('resource_id', resource_id, credits._max_id_chars(), nullable => false);
    PERFORM credits._require_positive('rate_per_hour', rate_per_hour);
    -- The account first, then the resource: the order every path locks them in (the periodic
    -- runs, the cut-off and the volume restore of a deposit), so none can deadlock with another.
    PERFORM credits._require_available_balance(project_id);
    SELECT * INTO r FROM credits.resources x
     WHERE x.project_id = _activate.project_id AND x.resource_id = _activate.resource_id FOR UPDATE;
    -- Spending limits (62_limits.sql), for a call that starts billing or changes the rate.
    IF r.project_id IS NULL OR r.kind = kind AND (r.state = 'stopped' OR r.state = active_state
                                                  AND r.rate_per_hour <> rate_per_hour) THEN
        PERFORM credits._check_start_limits(project_id, resource_id, kind, rate_per_hour,
                                            CASE WHEN r.state = active_state THEN r.rate_per_hour END);
    END IF;

    IF r.project_id IS NULL THEN
        INSERT INTO credits.resources (project_id, resource_id, kind, state, rate_per_hour, state_since,
                                       accrued_until, created_at)
        VALUES (project_id, resource_id, kind, active_state, rate_per_hour, at,
                credits._billing_start(project_id, at), at)
        ON CONFLICT ON CONSTRAINT resources_pkey DO NOTHING;
        IF NOT FOUND THEN
            -- A concurrent call created it first (and has committed): act on its row.
            PERFORM credits._activate(project_id, resource_id, kind, rate_per_hour);
        END IF;
    ELSIF r.kind <> kind THEN
        RAISE EXCEPTION 'resource % of project % is %, not %', resource_id, project_id,
            CASE r.kind WHEN 'instance' THEN 'an instance' ELSE 'a volume' END,
            CASE kind WHEN 'instance' THEN 'an instance' ELSE 'a volume' END
            USING ERRCODE = 'wrong_object_type';
    ELSIF r.state = active_state THEN
        IF r.rate_per_hour <> rate_per_hour THEN
            PERFORM credits._book_usage(project_id, kind, resource_id, r.rate_per_hour, r.accrued_until, at);
            UPDATE credits.resources x SET rate_per_hour = _activate.rate_per_hour,
                                           accrued_until = credits._billing_start(_activate.project_id, at)
             WHERE x.project_id = _activate.project_id AND x.resource_id = _activate.resource_id;
        END IF;
    ELSIF r.state = 'stopped' THEN
        UPDATE credits.resources x
           SET state = 'running', rate_per_hour = _activate.rate_per_hour, state_since = at,
               accrued_until = credits._billing_start(_activate.project_id, at)
         WHERE x.project_id = _activate.project_id AND x.resource_id = _activate.resource_id;
    ELSE
        RAISE EXCEPTION '% % of project % is %', kind, resource_id, project_id, r.state
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Terminated instances and deleted volumes cannot be used again; '
                           'inaccessible volumes come back when the balance is positive again.';
    END IF;
END $$;

-- Cuts a project off at time at: books every billing resource's time up to at, terminates
-- instances, locks volumes, queues the events.
CREATE OR REPLACE FUNCTION credits._cut_off(project_id bigint, at timestamptz) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    r credits.resources;
    balance credits.credits;
BEGIN
    FOR r IN SELECT * FROM credits.resources x
              WHERE x.project_id = _cut_off.project_id AND x.state IN ('running', 'available')
              ORDER BY x.resource_id FOR UPDATE
    LOOP
        PERFORM credits._book_usage(project_id, r.kind, r.resource_id, r.rate_per_hour, r.accrued_until, at);
        UPDATE credits.resources x
           SET state = CASE r.kind WHEN 'instance' THEN 'terminated' ELSE 'inaccessible' END,
               state_since = at, accrued_until = NULL
         WHERE x.project_id = _cut_off.project_id AND x.resource_id = r.resource_id;
        PERFORM credits._enqueue_event(project_id,
            CASE r.kind WHEN 'instance' THEN 'instance_terminated' ELSE 'volume_inaccessible' END,
            r.resource_id, NULL,
            jsonb_build_object('resource_id', r.resource_id, 'kind', r.kind, 'at', at)
                || credits._retention_payload(r.kind, at));
    END LOOP;
    SELECT a.balance INTO balance FROM credits.accounts a WHERE a.project_id = _cut_off.project_id;
    PERFORM credits._enqueue_event(project_id, 'balance_depleted', NULL, NULL,
        jsonb_build_object('balance', balance::text, 'at', at));
END $$;

-- Completes and deducts every usage hour that has ended and is not yet deducted, oldest first,
-- and starts the auto-recharges that the new balances call for.  Returns the number of usage
-- transactions completed.
-- (jit = off in both periodic runs: the row estimates of the hour segments are far too high,
-- and compiling the plans cost more than running them, about 1 s per run at 100,000 projects.)
CREATE OR REPLACE FUNCTION credits.run_hourly_deductions() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp SET jit = off AS $$
DECLARE
    at timestamptz;
    cur timestamptz;
    completed bigint;
    due record;
BEGIN
    PERFORM credits._lock_periodic_runs();
    at := credits.now();
    cur := credits.hour_of(at);
    PERFORM credits._fold_usage_events(at);
    PERFORM credits._recount_late_usage();    -- spending totals (61_spending_controls.sql)
    completed := credits._deduct_ended_hours(cur, at);
    -- (the accrued usage of every project is worth computing only when one may recharge)
    IF EXISTS (SELECT FROM credits.auto_recharge r WHERE r.enabled AND r.armed) THEN
        SELECT * INTO due FROM credits._due_projects();
        PERFORM credits._start_auto_recharges(due.recharge_ids, due.recharge_accrued);
    END IF;
    PERFORM credits._watch_spending(at);    -- spending controls (64_spending_checks.sql)
    RETURN completed;
END $$;

-- Cuts off every project whose accrued usage has used up its available balance (the balance
-- itself is still positive: deductions cut off the ones that reach zero), then starts the
-- auto-recharges that are due.  Returns the number of projects acted on (cut off, or
-- recharge requested, or both).
CREATE OR REPLACE FUNCTION credits.run_balance_checks() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp SET jit = off AS $$
DECLARE
    at timestamptz;
    due record;
    cut_off bigint[];
    recharged bigint[];
    controlled bigint[];
BEGIN
    PERFORM credits._lock_periodic_runs();
    at := credits.now();
    PERFORM credits._fold_usage_events(at);
    -- Both lists from one computation of the accrued usage (the cut-off books live usage into
    -- usage transactions, which leaves each project's total as it was).
    SELECT * INTO due FROM credits._due_projects();

    WITH used_up AS (
        SELECT u.project_id, u.accumulating
          FROM unnest(due.used_up_ids, due.used_up_accrued) AS u(project_id, accumulating)),
    flagged AS (
        -- The balance is tested again here: when a deposit committed after this statement's
        -- snapshot, the UPDATE re-evaluates its WHERE on the new row and must see the deposit.
        UPDATE credits.accounts a SET depleted = true
          FROM used_up WHERE a.project_id = used_up.project_id AND NOT a.depleted
                         AND a.balance <= used_up.accumulating
        RETURNING a.project_id)
    SELECT coalesce(array_agg(f.project_id), '{}') INTO cut_off FROM flagged f;

    recharged := credits._start_auto_recharges(due.recharge_ids, due.recharge_accrued);
    -- Spending controls and volume retention (64_spending_checks.sql, 65_volume_retention.sql).
    controlled := credits._watch_spending(at) || credits._enforce_volume_retention(at);
    RETURN (SELECT count(*) FROM (SELECT unnest(cut_off) UNION SELECT unnest(recharged)
                                  UNION SELECT unnest(controlled)) AS acted);
END $$;

-- Privileges, as 90_roles.sql gives them.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'credits'::regnamespace
                AND p.proname IN ('_spending_positions', '_watched_projects', '_stop_for_budget',
                                  '_recount_late_usage',
                                  '_spending_position_of', '_count_spending', '_require_positive_interval',
                                  '_require_positive_or_null', '_save_spending_controls',
                                  '_check_start_limits', '_hours_remaining', '_act_on_spending',
                                  '_check_spending', '_watch_spending', '_retention_payload',
                                  '_enforce_volume_retention', 'configure_limits', 'configure_alerts')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END $$;
GRANT SELECT ON credits.spending_overview TO credits_reader;
GRANT EXECUTE ON FUNCTION credits._spending_position_of(bigint) TO credits_reader;
GRANT EXECUTE ON FUNCTION
    credits.configure_limits(bigint, credits.credits, interval, credits.credits, credits.credits, text),
    credits.configure_alerts(bigint, credits.credits, interval)
  TO credits_app;
SELECT pg_catalog.pg_extension_config_dump('credits.spending_controls', '');
SELECT pg_catalog.pg_extension_config_dump('credits.spending_totals', '');
SELECT pg_catalog.pg_extension_config_dump('credits.volume_deletion_warnings', '');
