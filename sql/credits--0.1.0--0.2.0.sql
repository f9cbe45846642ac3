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


-- Every broken invariant, one row each (no rows: all is well).  An unknown project is an
-- error (P0002), not a clean result.  For one project its transactions are read through the
-- indexes (deposits by the history index, usage hour by hour); for all, the whole table.
-- (jit = off: the plan costs the whole-table branches too, and compiling it took about 1 s
-- at 100,000 projects, 500 times the time of checking one project.)
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

-- Where each watched project stands now (credits.now()): its balance, usage accrued and not
-- yet deducted, available balance, burn rate (as balance_overview counts it), and the charges
-- (collected and uncollected: the exact accrual) of usage hours beginning in the current UTC
-- day and month: the completed ones (completed_*: spending_totals plus the hours deducted
-- since it was counted, read hour by hour through the usage index) and the accumulating ones.
-- A project_id filter reaches every part, so one project's row is read through its indexes;
-- unfiltered, the accrued usage and burn rates are computed once for all projects (a query
-- that reads neither leaves them out).
CREATE VIEW credits._spending_positions AS
SELECT c.project_id, a.balance,
       coalesce(ip.accumulating, '0'::credits.credits) AS accumulating,
       greatest(a.balance - coalesce(ip.accumulating, '0'::credits.credits), '0'::credits.credits)
           AS available_balance,
       coalesce(br.burn_rate, '0'::credits.credits) AS burn_rate,
       cc.completed_today + coalesce(ip.today, '0'::credits.credits) AS spent_today,
       cc.completed_this_month + coalesce(ip.this_month, '0'::credits.credits) AS spent_this_month,
       p.day_start, p.month_start, a.deducted_until, cc.completed_today, cc.completed_this_month
  FROM credits.spending_controls c
  JOIN credits.accounts a ON a.project_id = c.project_id
  JOIN credits.spending_totals s ON s.project_id = c.project_id
  CROSS JOIN (SELECT date_trunc('day', credits.now(), 'UTC') AS day_start,
                     date_trunc('month', credits.now(), 'UTC') AS month_start) AS p
  CROSS JOIN LATERAL (
      -- (the hours scanned are those of the month not in spending_totals; those of the day
      -- are among them)
      SELECT CASE WHEN s.day_start = p.day_start THEN s.day_spent ELSE '0'::credits.credits END
                 + coalesce(credits._usage_total(credits._accrued_amount(t.accrued_units))
                                FILTER (WHERE t.usage_hour >= p.day_start
                                          AND (t.usage_hour >= s.counted_until
                                               OR s.day_start IS DISTINCT FROM p.day_start)),
                            '0'::credits.credits) AS completed_today,
             CASE WHEN s.month_start = p.month_start THEN s.month_spent ELSE '0'::credits.credits END
                 + coalesce(credits._usage_total(credits._accrued_amount(t.accrued_units)),
                            '0'::credits.credits) AS completed_this_month
        FROM generate_series(CASE WHEN s.month_start = p.month_start
                                  THEN greatest(s.counted_until, p.month_start) ELSE p.month_start END,
                             a.deducted_until - interval '1 hour', interval '1 hour') AS h(usage_hour)
        JOIN credits.transactions t ON t.usage_hour = h.usage_hour AND t.project_id = c.project_id
       WHERE t.type = 'usage' AND t.status = 'completed') AS cc
  LEFT JOIN (SELECT u.project_id, -credits._usage_total(u.amount) AS accumulating,
                    -credits._usage_total(u.amount)
                        FILTER (WHERE u.usage_hour >= date_trunc('day', credits.now(), 'UTC')) AS today,
                    -credits._usage_total(u.amount)
                        FILTER (WHERE u.usage_hour >= date_trunc('month', credits.now(), 'UTC')) AS this_month
               FROM credits.usage_in_progress u GROUP BY u.project_id) AS ip ON ip.project_id = c.project_id
  LEFT JOIN (SELECT b.project_id, credits.burn_rate(b.amount, interval '1 hour') AS burn_rate
               FROM credits._burn_rate_inputs b GROUP BY b.project_id) AS br ON br.project_id = c.project_id;

-- Brings spending_totals up to each watched project's deducted hours and to the current UTC
-- day and month: only projects deducted since they were counted, or whose period changed,
-- are rewritten.  Called by the periodic runs, which hold the periodic-run lock; rows locked
-- by another transaction are left for the next run.
CREATE FUNCTION credits._count_spending() RETURNS void
    LANGUAGE sql AS $$
    WITH due AS (
        SELECT p.project_id, p.deducted_until, p.day_start, p.month_start,
               p.completed_today, p.completed_this_month
          FROM credits._spending_positions p
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
    pos credits._spending_positions;
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
    SELECT * INTO pos FROM credits._spending_positions x WHERE x.project_id = _check_start_limits.project_id;

    IF c.min_runway IS NOT NULL AND raises THEN
        new_burn := pos.burn_rate - coalesce(old_rate, '0'::credits.credits) + rate_per_hour;
        IF pos.available_balance::numeric * 3600 < new_burn::numeric * extract(epoch FROM c.min_runway) THEN
            RAISE EXCEPTION 'project % would have less than its min_runway of % left', project_id, c.min_runway
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('The available balance of %s lasts %s h at the new burn rate of %s per hour.',
                                      pos.available_balance, round(pos.available_balance / new_burn, 2), new_burn),
                      HINT = 'Add credits first, or lower min_runway with credits.configure_limits().';
        END IF;
    END IF;

    IF kind = 'instance' AND c.on_budget = 'stop' AND raises
       AND (pos.spent_today >= c.daily_budget OR pos.spent_this_month >= c.monthly_budget) THEN
        RAISE EXCEPTION 'project % has reached its % budget', project_id,
            CASE WHEN pos.spent_today >= c.daily_budget THEN 'daily' ELSE 'monthly' END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Spent today %s of a daily budget of %s; this month %s of a monthly budget of %s.',
                                  pos.spent_today, coalesce(c.daily_budget::text, 'none'),
                                  pos.spent_this_month, coalesce(c.monthly_budget::text, 'none')),
                  HINT = 'Instances may start again when the UTC period ends or the budget is raised.';
    END IF;
    PERFORM credits._act_on_spending(ARRAY[pos]);
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

-- Acts on the projects whose positions are given (rows of credits._spending_positions):
-- queues the events their controls call for, records them, and stops the running instances
-- of projects over a budget with on_budget 'stop' (booked as stop_instance books them, an
-- instance_stopped event each).  The balance is read again under the account's lock.
-- Returns the projects acted on.
CREATE FUNCTION credits._act_on_spending(positions credits._spending_positions[]) RETURNS bigint[]
    LANGUAGE plpgsql AS $$
DECLARE
    at timestamptz := credits.now();
    acted bigint[];
    stop_ids bigint[];
    stop_budgets jsonb;
    r record;
BEGIN
    WITH pos AS (
        SELECT * FROM unnest(positions)),
    locked_accounts AS (
        SELECT a.project_id, a.balance FROM credits.accounts a
         WHERE a.project_id IN (SELECT p.project_id FROM pos p)
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
          CROSS JOIN LATERAL (SELECT greatest(l.balance - p.accumulating, '0'::credits.credits) AS available) AS v),
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
           (SELECT coalesce(array_agg(j.project_id), '{}') FROM judged j
             WHERE j.on_budget = 'stop' AND (j.daily_hit OR j.monthly_hit)),
           (SELECT jsonb_object_agg(j.project_id, CASE WHEN j.daily_hit THEN 'daily' ELSE 'monthly' END)
              FROM judged j WHERE j.on_budget = 'stop' AND (j.daily_hit OR j.monthly_hit))
      INTO acted, stop_ids, stop_budgets;
    IF cardinality(acted) > 0 THEN
        PERFORM pg_notify('credits_events', '');
    END IF;

    -- (read after the locks: an instance a start committed meanwhile is stopped too)
    FOR r IN SELECT x.project_id, x.resource_id FROM credits.resources x
              WHERE x.project_id = ANY (stop_ids) AND x.kind = 'instance' AND x.state = 'running'
              ORDER BY x.project_id, x.resource_id
    LOOP
        PERFORM credits._deactivate(r.project_id, r.resource_id, 'instance', 'stopped');
        PERFORM credits._enqueue_event(r.project_id, 'instance_stopped', r.resource_id, NULL,
            jsonb_build_object('resource_id', r.resource_id, 'kind', 'instance', 'reason', 'budget_reached',
                               'budget', stop_budgets ->> r.project_id::text, 'at', at));
        acted := acted || r.project_id;
    END LOOP;
    RETURN ARRAY(SELECT DISTINCT unnest(acted) ORDER BY 1);
END $$;

-- Checks one project's spending controls now (a deposit completed, a configuration saved).
CREATE FUNCTION credits._check_spending(project_id bigint) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    positions credits._spending_positions[];
BEGIN
    SELECT array_agg(p) INTO positions FROM credits._spending_positions p
     WHERE p.project_id = _check_spending.project_id;
    IF positions IS NOT NULL THEN
        PERFORM credits._act_on_spending(positions);
    END IF;
END $$;

-- Checks every watched project, set-based: counts the hours deducted since the last run,
-- computes every position once, and acts on the projects where something is due (an alert
-- line crossed either way, a budget reached and not yet announced this period, or running
-- instances over a budget that stops).  Returns the projects acted on.  The caller holds the
-- periodic-run lock.
CREATE FUNCTION credits._watch_spending(at timestamptz) RETURNS bigint[]
    LANGUAGE plpgsql AS $$
DECLARE
    due credits._spending_positions[];
BEGIN
    IF NOT EXISTS (SELECT FROM credits.spending_controls) THEN
        RETURN '{}';
    END IF;
    PERFORM credits._count_spending();
    SELECT array_agg(p ORDER BY p.project_id) INTO due
      FROM credits._spending_positions p
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

-- The limits and alert lines of each watched project, what it spent in the current UTC day
-- and month (charges of the usage hours beginning in them, collected or not, accumulating
-- included), whether a budget is reached, and which alert line its position is below now
-- ('balance_low' first, then 'runway_low', else 'ok').
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
  JOIN credits._spending_positions p ON p.project_id = c.project_id;

COMMENT ON VIEW credits.spending_overview IS
    'One row per project with spending limits or alerts set: the limits, the charges of the current UTC '
    'day and month, whether a budget is reached, and the alert state now (ok, balance_low, runway_low).';

-- The hooks in the shared functions.
-- pending → completed: raises the balance by the deposit in the same transaction and returns
-- the new balance.  A completed deposit re-arms auto-recharge.
-- Starts billing a resource (start_instance, attach_volume): creates it, restarts a stopped
-- instance, or changes the rate of one already billing (the time so far is booked at the old
-- rate).  Calling it again with the same rate does nothing.
-- Cuts a project off at time at: books every billing resource's time up to at, terminates
-- instances, locks volumes, queues the events.
-- Completes and deducts every usage hour that has ended and is not yet deducted, oldest first,
-- and starts the auto-recharges that the new balances call for.  Returns the number of usage
-- transactions completed.
-- (jit = off in both periodic runs: the row estimates of the hour segments are far too high,
-- and compiling the plans cost more than running them, about 1 s per run at 100,000 projects.)
-- Cuts off every project whose accrued usage has used up its available balance (the balance
-- itself is still positive: deductions cut off the ones that reach zero), then starts the
-- auto-recharges that are due.  Returns the number of projects acted on (cut off, or
-- recharge requested, or both).
-- Privileges, as 90_roles.sql gives them.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'credits'::regnamespace
                AND p.proname IN ('_count_spending', '_require_positive_interval',
                                  '_require_positive_or_null', '_save_spending_controls',
                                  '_check_start_limits', '_hours_remaining', '_act_on_spending',
                                  '_check_spending', '_watch_spending', '_retention_payload',
                                  '_enforce_volume_retention', 'configure_limits', 'configure_alerts')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END $$;
GRANT SELECT ON credits.spending_overview TO credits_reader;
GRANT EXECUTE ON FUNCTION
    credits.configure_limits(bigint, credits.credits, interval, credits.credits, credits.credits, text),
    credits.configure_alerts(bigint, credits.credits, interval)
  TO credits_app;
SELECT pg_catalog.pg_extension_config_dump('credits.spending_controls', '');
SELECT pg_catalog.pg_extension_config_dump('credits.spending_totals', '');
SELECT pg_catalog.pg_extension_config_dump('credits.volume_deletion_warnings', '');

-- ---------------------------------------------------------------------------------------------
-- The bounds on one call (200 characters, 1,000,000,000.00 credits) written once, in
-- src/credits_limits.h, and read by SQL through credits._max_id_chars() and _max_amount().
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION credits._max_id_chars() RETURNS integer
    AS 'MODULE_PATHNAME', 'credits_max_id_chars' LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION credits._max_amount() RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_max_amount' LANGUAGE C IMMUTABLE PARALLEL SAFE;

ALTER TABLE credits.payment_methods
    DROP CONSTRAINT payment_methods_provider_ref_check,
    ADD CONSTRAINT payment_methods_provider_ref_check CHECK (length(provider_ref) BETWEEN 1 AND credits._max_id_chars()),
    DROP CONSTRAINT payment_methods_label_check,
    ADD CONSTRAINT payment_methods_label_check CHECK (length(label) <= credits._max_id_chars());
ALTER TABLE credits.transactions
    DROP CONSTRAINT transactions_idempotency_key_check,
    ADD CONSTRAINT transactions_idempotency_key_check CHECK (length(idempotency_key) BETWEEN 1 AND credits._max_id_chars());
ALTER TABLE credits.resources
    DROP CONSTRAINT resources_resource_id_check,
    ADD CONSTRAINT resources_resource_id_check CHECK (length(resource_id) BETWEEN 1 AND credits._max_id_chars());
CREATE OR REPLACE FUNCTION credits._require_positive(arg_name text, amount credits.credits) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    PERFORM credits._require(arg_name, amount IS NULL);
    IF amount <= '0'::credits.credits THEN
        RAISE EXCEPTION '% must be positive, got %', arg_name, amount
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF amount > credits._max_amount() THEN
        RAISE EXCEPTION '% must be at most %, got %', arg_name, credits._max_amount(), amount
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION credits.add_payment_method(project_id bigint, provider_ref text, label text DEFAULT NULL,
                                           make_default boolean DEFAULT true) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    id bigint;
BEGIN
    PERFORM credits._require_text('provider_ref', provider_ref, credits._max_id_chars(), nullable => false);
    PERFORM credits._require_text('label', label, credits._max_id_chars());
    PERFORM credits._require('make_default', make_default IS NULL);
    PERFORM credits._lock_account(project_id);

    SELECT m.method_id INTO id FROM credits.payment_methods m
     WHERE m.project_id = add_payment_method.project_id AND m.provider_ref = add_payment_method.provider_ref
       AND m.removed_at IS NULL;
    IF id IS NULL THEN
        INSERT INTO credits.payment_methods (project_id, provider_ref, label, added_at)
        VALUES (project_id, provider_ref, label, credits.now())
        RETURNING method_id INTO id;
    END IF;
    IF make_default THEN
        PERFORM credits.set_default_payment_method(project_id, id);
    END IF;
    RETURN id;
END $$;

CREATE OR REPLACE FUNCTION credits.add_credits(project_id bigint, amount credits.credits, method_id bigint DEFAULT NULL,
                                    idempotency_key text DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    minimum credits.credits := credits.minimum_deposit();
    id bigint;
BEGIN
    PERFORM credits._require_account(project_id);
    PERFORM credits._require_positive('amount', amount);
    PERFORM credits._require_text('idempotency_key', idempotency_key, credits._max_id_chars());

    -- A retry is answered before the minimum is checked: it must get the original id even
    -- when the minimum was raised in between.
    IF idempotency_key IS NOT NULL THEN
        id := credits._deposit_by_key(project_id, amount, method_id, idempotency_key);
        IF id IS NOT NULL THEN
            RETURN id;
        END IF;
    END IF;

    IF amount < minimum THEN
        RAISE EXCEPTION 'deposit of % is below the minimum deposit of %', amount, minimum
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF method_id IS NULL THEN
        SELECT m.method_id INTO method_id FROM credits.payment_methods m
         WHERE m.project_id = add_credits.project_id AND m.is_default;
        IF method_id IS NULL THEN
            RAISE EXCEPTION 'project % has no default payment method', project_id
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Add one with credits.add_payment_method(), or pass method_id.';
        END IF;
    ELSE
        PERFORM credits._require_method(project_id, method_id);
    END IF;

    id := credits._request_charge(project_id, 'deposit', amount, method_id, idempotency_key);
    IF id IS NULL THEN
        -- A concurrent call with the same key committed first: answer as it did.
        id := credits._deposit_by_key(project_id, amount, method_id, idempotency_key);
    END IF;
    RETURN id;
END $$;

CREATE OR REPLACE FUNCTION credits._deactivate(project_id bigint, resource_id text, kind text, final_state text)
    RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    at timestamptz := credits.now();
    r credits.resources;
BEGIN
    PERFORM credits._require_account(project_id);
    PERFORM credits._require_text('resource_id', resource_id, credits._max_id_chars(), nullable => false);
    -- The account first, then the resource (see credits._activate).  A deduction run holds the
    -- account until it commits; the booking below then starts after the hours it deducted.
    PERFORM FROM credits.accounts a WHERE a.project_id = _deactivate.project_id FOR SHARE;
    SELECT * INTO r FROM credits.resources x
     WHERE x.project_id = _deactivate.project_id AND x.resource_id = _deactivate.resource_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project % has no % %', project_id, kind, resource_id USING ERRCODE = 'no_data_found';
    ELSIF r.kind <> kind THEN
        RAISE EXCEPTION 'resource % of project % is %, not %', resource_id, project_id,
            CASE r.kind WHEN 'instance' THEN 'an instance' ELSE 'a volume' END,
            CASE kind WHEN 'instance' THEN 'an instance' ELSE 'a volume' END
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF r.accrued_until IS NOT NULL THEN
        PERFORM credits._book_usage(project_id, kind, resource_id, r.rate_per_hour, r.accrued_until, at);
    END IF;
    IF r.state IN ('running', 'available') OR (kind = 'volume' AND r.state = 'inaccessible') THEN
        UPDATE credits.resources x SET state = final_state, state_since = at, accrued_until = NULL
         WHERE x.project_id = _deactivate.project_id AND x.resource_id = _deactivate.resource_id;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION credits._record_usage(project_id bigint, resource_id text, amount credits.credits,
                                      idempotency_key text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    at timestamptz := credits.now();
BEGIN
    -- (each check is a plain condition; an argument that fails it goes to its helper, which
    -- raises the usual error.  The bounds are those of credits._require_text and
    -- credits._require_positive.)
    IF NOT EXISTS (SELECT FROM credits.accounts a WHERE a.project_id = _record_usage.project_id) THEN
        PERFORM credits._require_account(project_id);
    END IF;
    IF resource_id IS NULL OR length(resource_id) NOT BETWEEN 1 AND credits._max_id_chars() THEN
        PERFORM credits._require_text('resource_id', resource_id, credits._max_id_chars(), nullable => false);
    END IF;
    IF amount IS NULL OR amount <= '0'::credits.credits OR amount > credits._max_amount() THEN
        PERFORM credits._require_positive('amount', amount);
    END IF;
    IF idempotency_key IS NOT NULL THEN
        IF length(idempotency_key) NOT BETWEEN 1 AND credits._max_id_chars() THEN
            PERFORM credits._require_text('idempotency_key', idempotency_key, credits._max_id_chars());
        END IF;
        INSERT INTO credits.usage_keys VALUES (project_id, idempotency_key, resource_id, amount, at)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            PERFORM credits._require_same_usage(project_id, idempotency_key, resource_id, amount);
            RETURN;
        END IF;
    END IF;
    INSERT INTO credits.usage_events VALUES (project_id, resource_id, credits.hour_of(at), amount);
END $$;

CREATE OR REPLACE FUNCTION credits.record_usage_batch(project_ids bigint[], resource_ids text[], amounts credits.credits[],
                                           idempotency_keys text[] DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    at timestamptz := credits.now();
    n integer := cardinality(project_ids);
    bad record;
    taken bigint;
BEGIN
    PERFORM credits._require('project_ids', project_ids IS NULL);
    PERFORM credits._require('resource_ids', resource_ids IS NULL);
    PERFORM credits._require('amounts', amounts IS NULL);
    IF cardinality(resource_ids) <> n OR cardinality(amounts) <> n
       OR cardinality(coalesce(idempotency_keys, project_ids::text[])) <> n THEN
        RAISE EXCEPTION 'the arrays must have the same length' USING ERRCODE = 'array_subscript_error';
    END IF;

    -- Every element is checked before anything is written.
    SELECT u.ord, u.project_id, u.resource_id, u.amount, u.idempotency_key INTO bad
      FROM unnest(project_ids, resource_ids, amounts, idempotency_keys)
           WITH ORDINALITY AS u(project_id, resource_id, amount, idempotency_key, ord)
     WHERE u.project_id IS NULL OR u.resource_id IS NULL OR u.amount IS NULL
        OR length(u.resource_id) NOT BETWEEN 1 AND credits._max_id_chars() OR u.amount <= '0'::credits.credits
        OR u.amount > credits._max_amount()
        OR length(u.idempotency_key) NOT BETWEEN 1 AND credits._max_id_chars()
     ORDER BY u.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'element % of the batch is invalid', bad.ord
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Project %s, resource %s, amount %s, key %s: every element needs a project, '
                                  'a resource id and key of 1 to %s characters and a positive amount '
                                  'of at most %s.',
                                  bad.project_id, bad.resource_id, bad.amount, bad.idempotency_key,
                                  credits._max_id_chars(), credits._max_amount());
    END IF;
    SELECT p.project_id INTO bad
      FROM (SELECT DISTINCT x.project_id FROM unnest(project_ids) AS x(project_id)) AS p
     WHERE NOT EXISTS (SELECT FROM credits.accounts a WHERE a.project_id = p.project_id) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'unknown project %', bad.project_id USING ERRCODE = 'no_data_found';
    END IF;

    -- Without keys every element is taken: one plain INSERT, and no key to check afterwards.
    -- The batch's elements of one project and product are appended as one event (the fold
    -- adds them up all the same); a group holds at most 1,000 elements, so its sum stays far
    -- inside the range of credits (1,000 x the 1e9 ceiling).
    IF idempotency_keys IS NULL THEN
        INSERT INTO credits.usage_events
        SELECT u.project_id, u.resource_id, credits.hour_of(at), sum(u.amount)
          FROM unnest(project_ids, resource_ids, amounts) WITH ORDINALITY AS u(project_id, resource_id, amount, ord)
         GROUP BY u.project_id, u.resource_id, (u.ord - 1) / 1000;
        RETURN n;
    END IF;

    -- The first element with a key takes it (unless an earlier call did); only taken keys and
    -- unkeyed elements are recorded.
    WITH input AS (
        SELECT * FROM unnest(project_ids, resource_ids, amounts, idempotency_keys)
                      WITH ORDINALITY AS u(project_id, resource_id, amount, idempotency_key, ord)),
    first_use AS (
        SELECT DISTINCT ON (i.project_id, i.idempotency_key) i.*
          FROM input i WHERE i.idempotency_key IS NOT NULL
         ORDER BY i.project_id, i.idempotency_key, i.ord),
    claimed AS (
        INSERT INTO credits.usage_keys
        SELECT f.project_id, f.idempotency_key, f.resource_id, f.amount, at FROM first_use f
        ON CONFLICT DO NOTHING
        RETURNING project_id, idempotency_key),
    taken_elements AS (
        SELECT i.* FROM input i
         WHERE i.idempotency_key IS NULL
            OR i.ord IN (SELECT f.ord FROM first_use f JOIN claimed c USING (project_id, idempotency_key))),
    appended AS (
        INSERT INTO credits.usage_events
        SELECT t.project_id, t.resource_id, credits.hour_of(at), sum(t.amount)
          FROM taken_elements t GROUP BY t.project_id, t.resource_id, (t.ord - 1) / 1000)
    SELECT count(*) INTO taken FROM taken_elements;

    -- A key used before (or twice in this batch) must repeat its arguments; else nothing stays.
    SELECT u.idempotency_key INTO bad
      FROM unnest(project_ids, resource_ids, amounts, idempotency_keys) AS u(project_id, resource_id, amount, idempotency_key)
      JOIN credits.usage_keys k USING (project_id, idempotency_key)
     WHERE k.resource_id <> u.resource_id OR k.amount <> u.amount
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'idempotency key "%" was already used with other arguments', bad.idempotency_key
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN taken;
END $$;

-- ---------------------------------------------------------------------------------------------
-- One project never holds up another: its unfolded API usage is read through the index of
-- usage_events (src/unfolded_usage.c), whatever the statistics say; balance_overview joins
-- views grouped by project, so the overview of every project is set-based.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION credits._unfolded_usage(project_id bigint)
    RETURNS TABLE (resource_id text, usage_hour timestamptz, units numeric)
    AS 'MODULE_PATHNAME', 'credits_unfolded_usage' LANGUAGE C STABLE STRICT PARALLEL SAFE ROWS 2;

CREATE OR REPLACE VIEW credits.usage_in_progress AS
SELECT x.project_id, max(x.transaction_id) AS transaction_id, x.resource_id, x.usage_hour,
       max(x.description) AS description, -credits._accrued_amount(sum(x.units)) AS amount
  FROM (SELECT t.project_id, t.transaction_id, t.resource_id, t.usage_hour, t.description,
               t.accrued_units AS units
          FROM credits.transactions t
         WHERE t.status = 'accumulating'
        UNION ALL
        SELECT r.project_id, NULL, r.resource_id, s.usage_hour, credits._describe(r.kind, r.resource_id), s.units
          FROM credits.resources r
          JOIN credits.accounts a ON a.project_id = r.project_id,
               LATERAL credits._hour_segments(r.rate_per_hour, greatest(r.accrued_until, a.deducted_until),
                                              credits.now()) AS s
         WHERE r.accrued_until < credits.now()
        UNION ALL
        SELECT u.project_id, NULL, u.resource_id, u.usage_hour, credits._describe('api', u.resource_id), u.units
          FROM credits.usage_rollup u
        UNION ALL
        -- (events of an hour already deducted show in the current hour, where the fold puts them;
        -- each project's events are read through their index, whatever the statistics say)
        SELECT a.project_id, NULL, e.resource_id,
               CASE WHEN EXISTS (SELECT FROM credits.transactions t
                                  WHERE t.project_id = a.project_id AND t.resource_id = e.resource_id
                                    AND t.usage_hour = e.usage_hour AND t.type = 'usage'
                                    AND t.status = 'completed')
                    THEN credits.hour_of(credits.now()) ELSE e.usage_hour END,
               credits._describe('api', e.resource_id), e.units
          FROM credits.accounts a, LATERAL credits._unfolded_usage(a.project_id) AS e) AS x
 GROUP BY x.project_id, x.resource_id, x.usage_hour;

CREATE VIEW credits._burn_rate_by_project AS
SELECT b.project_id, credits.burn_rate(b.amount, interval '1 hour') AS burn_rate
  FROM credits._burn_rate_inputs b GROUP BY b.project_id;

CREATE OR REPLACE VIEW credits.balance_overview AS
SELECT a.project_id,
       a.balance AS current_balance,
       v.accumulating,
       v.available_balance,
       v.burn_rate,
       CASE WHEN v.burn_rate > '0'::credits.credits
            THEN round(v.available_balance / v.burn_rate, 2) END AS hours_remaining,
       CASE WHEN v.burn_rate > '0'::credits.credits
            THEN date_trunc('second', credits.now() + (v.available_balance / v.burn_rate) * interval '1 hour')
       END AS runs_out_at,
       coalesce(r.enabled, false) AS auto_recharge_enabled
  FROM credits.accounts a
  LEFT JOIN credits.auto_recharge r ON r.project_id = a.project_id
  LEFT JOIN credits.accumulating_by_project u ON u.project_id = a.project_id
  LEFT JOIN credits._burn_rate_by_project b ON b.project_id = a.project_id
  CROSS JOIN LATERAL (
      SELECT coalesce(u.accumulating, '0'::credits.credits) AS accumulating,
             greatest(a.balance - coalesce(u.accumulating, '0'::credits.credits), '0'::credits.credits)
                 AS available_balance,
             coalesce(b.burn_rate, '0'::credits.credits) AS burn_rate) AS v;

REVOKE ALL ON FUNCTION credits._unfolded_usage(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION credits._unfolded_usage(bigint) TO credits_reader;

-- ---------------------------------------------------------------------------------------------
-- One project's completed usage and verify(project) read only that project's rows, whatever
-- the statistics: the probe per (hour, project) is fenced; verify's checks are planned per
-- call with the project asked about (credits._verify).
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE VIEW credits._completed_usage AS
SELECT t.*
  FROM generate_series((SELECT min(f.usage_hour) FROM credits.transactions f WHERE f.type = 'usage'),
                       (SELECT max(l.usage_hour) FROM credits.transactions l WHERE l.type = 'usage'),
                       interval '1 hour') AS h(usage_hour)
  JOIN credits.accounts a ON h.usage_hour >= a.deducted_from AND h.usage_hour < a.deducted_until
  CROSS JOIN LATERAL (SELECT u.* FROM credits.transactions u
                       WHERE u.usage_hour = h.usage_hour AND u.project_id = a.project_id
                         AND u.type = 'usage' AND u.status = 'completed'
                      OFFSET 0) AS t
 WHERE t.project_id = a.project_id AND t.usage_hour = h.usage_hour;

CREATE FUNCTION credits._verify(scope_id bigint)
    RETURNS TABLE (project_id bigint, problem text)
    LANGUAGE plpgsql STABLE SET plan_cache_mode = force_custom_plan SET jit = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH scope AS (
        SELECT a.* FROM credits.accounts a WHERE _verify.scope_id IS NULL
        UNION ALL
        SELECT a.* FROM credits.accounts a
         WHERE _verify.scope_id IS NOT NULL
           AND a.project_id = (SELECT credits._require_account(_verify.scope_id))),
    -- the transactions of the one project asked about, read once (completed usage hour by
    -- hour, over its deducted hours)
    project_rows AS MATERIALIZED (
        SELECT t.* FROM credits.transactions t
         WHERE t.type <> 'usage' AND t.project_id = _verify.scope_id
        UNION ALL
        SELECT t.* FROM credits._completed_usage t
         WHERE t.project_id = _verify.scope_id
        UNION ALL
        SELECT t.* FROM credits.transactions t
         WHERE t.status = 'accumulating' AND t.project_id = _verify.scope_id),
    -- the transactions of the accounts in scope (all of them: read by each check)
    scoped AS NOT MATERIALIZED (
        SELECT t.* FROM credits.transactions t
         WHERE _verify.scope_id IS NULL
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
     WHERE _verify.scope_id IS NULL
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
     WHERE _verify.scope_id IS NULL AND t.type = 'usage'
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
END $$;

CREATE OR REPLACE FUNCTION credits.verify(project_id bigint DEFAULT NULL)
    RETURNS TABLE (project_id bigint, problem text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
    SELECT * FROM credits._verify(verify.project_id);
$$;

REVOKE ALL ON FUNCTION credits._verify(bigint) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- A view of a project's payment methods; project ids are positive.
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION credits.open_account(project_id bigint) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
BEGIN
    PERFORM credits._require('project_id', project_id IS NULL);
    IF project_id < 1 THEN
        RAISE EXCEPTION 'project_id must be positive, got %', project_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO credits.accounts (project_id, opened_at) VALUES (project_id, credits.now())
    ON CONFLICT DO NOTHING;
END $$;

CREATE VIEW credits.payment_method_overview AS
SELECT m.project_id, m.method_id, m.provider_ref, m.label, m.is_default, m.removed_at IS NOT NULL AS removed
  FROM credits.payment_methods m;

GRANT SELECT ON credits.payment_method_overview TO credits_reader;
COMMENT ON VIEW credits.payment_method_overview IS 'one row per payment method ever added: provider id, label, whether it is the default, whether it was removed';

-- ---------------------------------------------------------------------------------------------
-- One home for the available balance (credits._available) and for a charge's description and
-- payment-worker payload (credits._charge_description, credits._charge_payload).
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION credits._available(balance credits.credits, accrued credits.credits) RETURNS credits.credits
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN greatest(balance - coalesce(accrued, '0'::credits.credits), '0'::credits.credits);

CREATE FUNCTION credits._charge_description(type credits.transaction_type, label text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE type WHEN 'deposit' THEN 'Deposit' ELSE 'Auto-recharge' END || coalesce(' (' || label || ')', '');

CREATE FUNCTION credits._charge_payload(transaction_id bigint, type credits.transaction_type,
                                        amount credits.credits, method_id bigint, provider_ref text,
                                        idempotency_key text) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN jsonb_build_object('transaction_id', transaction_id, 'type', type, 'amount', amount::text,
                              'method_id', method_id, 'provider_ref', provider_ref,
                              'idempotency_key', idempotency_key);

CREATE OR REPLACE FUNCTION credits.available_balance(project_id bigint) RETURNS credits.credits
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
    SELECT credits._available(a.balance, credits._accumulating(a.project_id))
      FROM credits.accounts a
     WHERE a.project_id = (SELECT credits._require_account(available_balance.project_id));
$$;

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
               NOT p.depleted AND p.balance <= p.accumulating AS used_up,
               p.recharging AND credits._available(p.balance, p.accrued) < p.threshold AS recharge
          FROM positions p)
    SELECT coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.used_up), '{}'),
           coalesce(array_agg(f.accrued ORDER BY f.project_id) FILTER (WHERE f.used_up), '{}'),
           coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.recharge), '{}'),
           coalesce(array_agg(f.accrued ORDER BY f.project_id) FILTER (WHERE f.recharge), '{}')
      FROM flagged f;
END;

CREATE OR REPLACE FUNCTION credits._start_auto_recharges(candidate_ids bigint[], candidate_accrued credits.credits[])
    RETURNS bigint[]
    LANGUAGE plpgsql AS $$
DECLARE
    requested_ids bigint[];
BEGIN
    WITH due AS (
        SELECT r.project_id, r.amount, m.method_id, m.provider_ref, m.label
          FROM unnest(candidate_ids, candidate_accrued) AS c(project_id, accrued)
          JOIN credits.auto_recharge r ON r.project_id = c.project_id
          JOIN credits.accounts a ON a.project_id = c.project_id
          JOIN LATERAL (SELECT m.method_id, m.provider_ref, m.label FROM credits.payment_methods m
                         WHERE m.project_id = r.project_id AND m.removed_at IS NULL
                           AND (m.method_id = r.method_id OR (r.method_id IS NULL AND m.is_default))) AS m ON true
         WHERE r.enabled AND r.armed
           AND credits._available(a.balance, c.accrued) < r.threshold
           AND NOT EXISTS (SELECT FROM credits.transactions t
                            WHERE t.project_id = r.project_id AND t.type = 'auto_recharge'
                              AND t.status = 'pending')),
    requested AS (
        INSERT INTO credits.transactions AS t (project_id, type, status, amount, created_at, description, method_id)
        SELECT d.project_id, 'auto_recharge', 'pending', d.amount, credits.now(),
               credits._charge_description('auto_recharge', d.label), d.method_id
          FROM due d ORDER BY d.project_id
        ON CONFLICT DO NOTHING
        RETURNING t.transaction_id, t.project_id, t.amount, t.method_id),
    queued AS (
        INSERT INTO credits.events (project_id, kind, resource_id, transaction_id, payload, created_at)
        SELECT q.project_id, 'charge_requested', NULL, q.transaction_id,
               credits._charge_payload(q.transaction_id, 'auto_recharge', q.amount, q.method_id,
                                       d.provider_ref, NULL),
               credits.now()
          FROM requested q JOIN due d ON d.project_id = q.project_id
         ORDER BY q.transaction_id)
    SELECT coalesce(array_agg(q.project_id ORDER BY q.project_id), '{}') INTO requested_ids FROM requested q;

    IF cardinality(requested_ids) > 0 THEN
        PERFORM pg_notify('credits_events', '');
    END IF;
    RETURN requested_ids;
END $$;

CREATE OR REPLACE FUNCTION credits._request_charge(project_id bigint, type credits.transaction_type,
                                        amount credits.credits, method_id bigint,
                                        idempotency_key text) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    method credits.payment_methods;
    new_id bigint;
BEGIN
    SELECT * INTO method FROM credits.payment_methods m WHERE m.method_id = _request_charge.method_id;
    INSERT INTO credits.transactions AS t (project_id, type, status, amount, created_at, description,
                                           method_id, idempotency_key)
    VALUES (project_id, type, 'pending', amount, credits.now(),
            credits._charge_description(type, method.label),
            method_id, idempotency_key)
    ON CONFLICT DO NOTHING
    RETURNING t.transaction_id INTO new_id;
    IF new_id IS NOT NULL THEN
        PERFORM credits._enqueue_event(project_id, 'charge_requested', NULL, new_id,
            credits._charge_payload(new_id, type, amount, method_id, method.provider_ref, idempotency_key));
    END IF;
    RETURN new_id;
END $$;

CREATE OR REPLACE VIEW credits.balance_overview AS
SELECT a.project_id,
       a.balance AS current_balance,
       v.accumulating,
       v.available_balance,
       v.burn_rate,
       CASE WHEN v.burn_rate > '0'::credits.credits
            THEN round(v.available_balance / v.burn_rate, 2) END AS hours_remaining,
       CASE WHEN v.burn_rate > '0'::credits.credits
            THEN date_trunc('second', credits.now() + (v.available_balance / v.burn_rate) * interval '1 hour')
       END AS runs_out_at,
       coalesce(r.enabled, false) AS auto_recharge_enabled
  FROM credits.accounts a
  LEFT JOIN credits.auto_recharge r ON r.project_id = a.project_id
  LEFT JOIN credits.accumulating_by_project u ON u.project_id = a.project_id
  LEFT JOIN credits._burn_rate_by_project b ON b.project_id = a.project_id
  CROSS JOIN LATERAL (
      SELECT coalesce(u.accumulating, '0'::credits.credits) AS accumulating,
             credits._available(a.balance, u.accumulating) AS available_balance,
             coalesce(b.burn_rate, '0'::credits.credits) AS burn_rate) AS v;

CREATE OR REPLACE VIEW credits._spending_positions AS
SELECT c.project_id, a.balance,
       coalesce(ip.accumulating, '0'::credits.credits) AS accumulating,
       credits._available(a.balance, ip.accumulating) AS available_balance,
       coalesce(br.burn_rate, '0'::credits.credits) AS burn_rate,
       cc.completed_today + coalesce(ip.today, '0'::credits.credits) AS spent_today,
       cc.completed_this_month + coalesce(ip.this_month, '0'::credits.credits) AS spent_this_month,
       p.day_start, p.month_start, a.deducted_until, cc.completed_today, cc.completed_this_month
  FROM credits.spending_controls c
  JOIN credits.accounts a ON a.project_id = c.project_id
  JOIN credits.spending_totals s ON s.project_id = c.project_id
  CROSS JOIN (SELECT date_trunc('day', credits.now(), 'UTC') AS day_start,
                     date_trunc('month', credits.now(), 'UTC') AS month_start) AS p
  CROSS JOIN LATERAL (
      -- (the hours scanned are those of the month not in spending_totals; those of the day
      -- are among them)
      SELECT CASE WHEN s.day_start = p.day_start THEN s.day_spent ELSE '0'::credits.credits END
                 + coalesce(credits._usage_total(credits._accrued_amount(t.accrued_units))
                                FILTER (WHERE t.usage_hour >= p.day_start
                                          AND (t.usage_hour >= s.counted_until
                                               OR s.day_start IS DISTINCT FROM p.day_start)),
                            '0'::credits.credits) AS completed_today,
             CASE WHEN s.month_start = p.month_start THEN s.month_spent ELSE '0'::credits.credits END
                 + coalesce(credits._usage_total(credits._accrued_amount(t.accrued_units)),
                            '0'::credits.credits) AS completed_this_month
        FROM generate_series(CASE WHEN s.month_start = p.month_start
                                  THEN greatest(s.counted_until, p.month_start) ELSE p.month_start END,
                             a.deducted_until - interval '1 hour', interval '1 hour') AS h(usage_hour)
        JOIN credits.transactions t ON t.usage_hour = h.usage_hour AND t.project_id = c.project_id
       WHERE t.type = 'usage' AND t.status = 'completed') AS cc
  LEFT JOIN (SELECT u.project_id, -credits._usage_total(u.amount) AS accumulating,
                    -credits._usage_total(u.amount)
                        FILTER (WHERE u.usage_hour >= date_trunc('day', credits.now(), 'UTC')) AS today,
                    -credits._usage_total(u.amount)
                        FILTER (WHERE u.usage_hour >= date_trunc('month', credits.now(), 'UTC')) AS this_month
               FROM credits.usage_in_progress u GROUP BY u.project_id) AS ip ON ip.project_id = c.project_id
  LEFT JOIN (SELECT b.project_id, credits.burn_rate(b.amount, interval '1 hour') AS burn_rate
               FROM credits._burn_rate_inputs b GROUP BY b.project_id) AS br ON br.project_id = c.project_id;

REVOKE ALL ON FUNCTION credits._charge_description(credits.transaction_type, text), credits._charge_payload(bigint, credits.transaction_type, credits.credits, bigint, text, text) FROM PUBLIC;
CREATE OR REPLACE FUNCTION credits._act_on_spending(positions credits._spending_positions[]) RETURNS bigint[]
    LANGUAGE plpgsql AS $$
DECLARE
    at timestamptz := credits.now();
    acted bigint[];
    stop_ids bigint[];
    stop_budgets jsonb;
    r record;
BEGIN
    WITH pos AS (
        SELECT * FROM unnest(positions)),
    locked_accounts AS (
        SELECT a.project_id, a.balance FROM credits.accounts a
         WHERE a.project_id IN (SELECT p.project_id FROM pos p)
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
           (SELECT coalesce(array_agg(j.project_id), '{}') FROM judged j
             WHERE j.on_budget = 'stop' AND (j.daily_hit OR j.monthly_hit)),
           (SELECT jsonb_object_agg(j.project_id, CASE WHEN j.daily_hit THEN 'daily' ELSE 'monthly' END)
              FROM judged j WHERE j.on_budget = 'stop' AND (j.daily_hit OR j.monthly_hit))
      INTO acted, stop_ids, stop_budgets;
    IF cardinality(acted) > 0 THEN
        PERFORM pg_notify('credits_events', '');
    END IF;

    -- (read after the locks: an instance a start committed meanwhile is stopped too)
    FOR r IN SELECT x.project_id, x.resource_id FROM credits.resources x
              WHERE x.project_id = ANY (stop_ids) AND x.kind = 'instance' AND x.state = 'running'
              ORDER BY x.project_id, x.resource_id
    LOOP
        PERFORM credits._deactivate(r.project_id, r.resource_id, 'instance', 'stopped');
        PERFORM credits._enqueue_event(r.project_id, 'instance_stopped', r.resource_id, NULL,
            jsonb_build_object('resource_id', r.resource_id, 'kind', 'instance', 'reason', 'budget_reached',
                               'budget', stop_budgets ->> r.project_id::text, 'at', at));
        acted := acted || r.project_id;
    END LOOP;
    RETURN ARRAY(SELECT DISTINCT unnest(acted) ORDER BY 1);
END $$;


-- ---------------------------------------------------------------------------------------------
-- Credit lots, grants, expiry, refunds and statements (sql/install/35_lots.sql, 36_refunds.sql,
-- 45_lot_standing.sql, 53_expiry.sql, 62_statements.sql).  The three new transaction types are
-- compared as text wherever this script's objects name them: PostgreSQL 15 refuses a label added
-- by ALTER TYPE ... ADD VALUE as a value later in the same transaction.
--
-- Existing data: every completed deposit and auto-recharge becomes a paid lot.  The deduction
-- draws on paid lots oldest first (by completion), so what a 0.1.0 balance still holds is the
-- newest deposits' credits: the balance is given to the lots newest first, each up to its
-- amount, and the rest of each lot counts as used.  The lots' remaining amounts then add up to
-- the balance, and they are what a database that had run 0.2.0 from the start would hold.
-- ---------------------------------------------------------------------------------------------
ALTER TYPE credits.transaction_type ADD VALUE 'grant';
ALTER TYPE credits.transaction_type ADD VALUE 'expiry';
ALTER TYPE credits.transaction_type ADD VALUE 'refund';
ALTER TABLE credits.transactions ADD COLUMN lot_id bigint;
-- Every completed usage transaction, found hour by hour: each project's in its deducted
-- hours, [accounts.deducted_from, accounts.deducted_until), where the deduction that completes
-- them puts them.  Each (hour, project) is one probe of the unique index (usage_hour,
-- project_id, resource_id), about 1 microsecond, plus its rows; the index is ordered by hour
-- so that the hourly run only appends to it (sql/install/30_ledger_tables.sql).  The probe is
-- fenced (OFFSET 0) so that no statistics can turn it into a scan of other projects' rows;
-- the outer equalities hand a filter on project_id to the accounts and one on usage_hour to
-- the hours.  So one project's read probes its own hours only, and every project's usage of a
-- time range probes those hours only.  (usage_hour is a whole UTC hour: usage_shape.
-- verify() checks that no completed hour lies outside its project's deducted hours.)
CREATE OR REPLACE VIEW credits._completed_usage AS
SELECT t.*
  FROM generate_series((SELECT min(f.usage_hour) FROM credits.transactions f WHERE f.type = 'usage'),
                       (SELECT max(l.usage_hour) FROM credits.transactions l WHERE l.type = 'usage'),
                       interval '1 hour') AS h(usage_hour)
  JOIN credits.accounts a ON h.usage_hour >= a.deducted_from AND h.usage_hour < a.deducted_until
  CROSS JOIN LATERAL (SELECT u.* FROM credits.transactions u
                       WHERE u.usage_hour = h.usage_hour AND u.project_id = a.project_id
                         AND u.type = 'usage' AND u.status = 'completed'
                      OFFSET 0) AS t
 WHERE t.project_id = a.project_id AND t.usage_hour = h.usage_hour;
ALTER TABLE credits.transactions DROP CONSTRAINT usage_shape;
ALTER TABLE credits.transactions
  ADD CONSTRAINT usage_shape CHECK (
        CASE WHEN type = 'usage'
             THEN resource_id IS NOT NULL AND usage_hour IS NOT NULL AND accrued_units IS NOT NULL
                  -- (a whole UTC hour: credits._completed_usage finds rows hour by hour)
                  AND usage_hour = credits.hour_of(usage_hour)
                  AND status IN ('accumulating', 'completed') AND amount <= '0'::credits.credits
                  AND uncollected >= '0'::credits.credits
                  AND (status = 'completed' OR uncollected = '0'::credits.credits)
                  AND method_id IS NULL AND idempotency_key IS NULL
             ELSE resource_id IS NULL AND usage_hour IS NULL AND accrued_units IS NULL
                  AND status IN ('pending', 'completed', 'failed') AND amount <> '0'::credits.credits
                  -- (the labels added in 0.2.0 as text: an upgrade cannot use them as values)
                  AND (amount > '0'::credits.credits) = (type::text NOT IN ('expiry', 'refund'))
                  AND uncollected = '0'::credits.credits
        END);
-- (usage rows, the most written, are judged without the text of their type)
ALTER TABLE credits.transactions ADD CONSTRAINT lot_shape CHECK (CASE WHEN type = 'usage' THEN lot_id IS NULL
                                                                     ELSE (lot_id IS NOT NULL) = (type::text IN ('expiry', 'refund')) END);
ALTER TABLE credits.events DROP CONSTRAINT events_kind_check;
ALTER TABLE credits.events ADD CONSTRAINT events_kind_check CHECK (kind IN ('charge_requested',
                       'instance_terminated', 'volume_inaccessible', 'volume_available', 'balance_depleted',
                       -- spending controls and volume retention (sql/install/6x_*.sql)
                       'budget_reached', 'instance_stopped', 'balance_low', 'runway_low',
                       'balance_recovered', 'volume_deletion_warning', 'volume_deleted',
                       -- refunds (sql/install/36_refunds.sql)
                       'refund_requested'));

CREATE TABLE credits.credit_lots (
    -- The completed deposit, auto-recharge or grant that made the lot.
    transaction_id bigint PRIMARY KEY,
    project_id     bigint NOT NULL REFERENCES credits.accounts,
    kind           text NOT NULL CHECK (kind IN ('paid', 'promotional')),
    amount         credits.credits NOT NULL CHECK (amount > '0'::credits.credits),
    -- What is left of it: part of the balance.
    remaining      credits.credits NOT NULL,
    -- What usage took from it (the hourly deduction adds each run's draws).
    used           credits.credits NOT NULL DEFAULT '0',
    -- What pending refunds hold of remaining: no usage draws on it.
    held           credits.credits NOT NULL DEFAULT '0',
    -- It pays for the usage hours that begin before expires_at (null: it never expires).
    expires_at     timestamptz,
    -- Lower first.
    priority       integer NOT NULL DEFAULT 50 CHECK (priority BETWEEN 0 AND 100),
    -- The kinds of usage it may pay for, among instance, volume and api (null: all).
    applies_to     text[] CHECK (applies_to <@ ARRAY['instance', 'volume', 'api'] AND cardinality(applies_to) > 0),
    -- When it joined the balance (the deposit's completion, the grant).
    created_at     timestamptz NOT NULL,
    -- Something remains of it; else how it ended.
    active         boolean NOT NULL DEFAULT true,
    ended          text CHECK (ended IN ('used', 'expired', 'refunded')),
    CONSTRAINT lot_amounts CHECK (
        remaining >= '0'::credits.credits AND used >= '0'::credits.credits AND held >= '0'::credits.credits
        AND held <= remaining AND remaining + used <= amount),
    CONSTRAINT lot_state CHECK (active = (remaining > '0'::credits.credits) AND active = (ended IS NULL)),
    CONSTRAINT paid_lot_shape CHECK (
        kind = 'promotional' OR (priority = 50 AND expires_at IS NULL AND applies_to IS NULL))
)
-- Half-empty pages: each hourly run updates the lots it draws on, heap-only (remaining and used
-- are in no index).
WITH (fillfactor = 50);
-- One project's lots (its history, verify()), and those still holding credits: what the
-- deduction and the balance reads draw on.
CREATE INDEX credit_lots_project ON credits.credit_lots (project_id);
CREATE INDEX credit_lots_active ON credits.credit_lots (project_id) WHERE active;
-- The lots that make a project's standing more than its balance less its accrued usage: with an
-- expiry, limited to some kinds, or partly held by a refund (few; the balance checks read them).
CREATE INDEX credit_lots_special ON credits.credit_lots (project_id)
    WHERE active AND (expires_at IS NOT NULL OR applies_to IS NOT NULL OR held > '0'::credits.credits);
-- The lots waiting for their expiry.
CREATE INDEX credit_lots_expiring ON credits.credit_lots (expires_at) WHERE active AND expires_at IS NOT NULL;

-- The bits of the kinds a lot may pay for (src/lots.h): instance 1, volume 2, api 4; null: all.
CREATE FUNCTION credits._kind_mask(applies_to text[]) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN applies_to IS NULL THEN 7
                ELSE (CASE WHEN 'instance' = ANY (applies_to) THEN 1 ELSE 0 END
                      + CASE WHEN 'volume' = ANY (applies_to) THEN 2 ELSE 0 END
                      + CASE WHEN 'api' = ANY (applies_to) THEN 4 ELSE 0 END) END;
-- Adds a completed deposit, auto-recharge or grant to the balance as a lot (the caller holds the
-- account); returns the new balance.
CREATE FUNCTION credits._add_lot(project_id bigint, transaction_id bigint, kind text, amount credits.credits,
                                 expires_at timestamptz DEFAULT NULL, priority integer DEFAULT 50,
                                 applies_to text[] DEFAULT NULL) RETURNS credits.credits
    LANGUAGE plpgsql AS $$
DECLARE
    new_balance credits.credits;
BEGIN
    INSERT INTO credits.credit_lots (transaction_id, project_id, kind, amount, remaining, expires_at,
                                     priority, applies_to, created_at)
    VALUES (transaction_id, project_id, kind, amount, amount, expires_at, priority, applies_to, credits.now());
    UPDATE credits.accounts a SET balance = a.balance + amount
     WHERE a.project_id = _add_lot.project_id
    RETURNING a.balance INTO new_balance;
    RETURN new_balance;
END $$;
-- The grant an earlier grant_credits made with this idempotency key, if any; raises when that
-- call had other arguments.
CREATE FUNCTION credits._grant_by_key(project_id bigint, amount credits.credits, expires_at timestamptz,
                                      priority integer, applies_to text[], idempotency_key text) RETURNS bigint
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    earlier credits.transactions;
    lot credits.credit_lots;
BEGIN
    SELECT * INTO earlier FROM credits.transactions t
     WHERE t.project_id = _grant_by_key.project_id AND t.idempotency_key = _grant_by_key.idempotency_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO lot FROM credits.credit_lots l WHERE l.transaction_id = earlier.transaction_id;
    IF earlier.type::text <> 'grant' OR earlier.amount <> amount
       OR lot.expires_at IS DISTINCT FROM _grant_by_key.expires_at OR lot.priority <> _grant_by_key.priority
       OR lot.applies_to IS DISTINCT FROM _grant_by_key.applies_to THEN
        RAISE EXCEPTION 'idempotency key "%" was already used with other arguments', idempotency_key
            USING ERRCODE = 'unique_violation',
                  DETAIL = format('Transaction %s is a %s of %s.', earlier.transaction_id, earlier.type, earlier.amount);
    END IF;
    RETURN earlier.transaction_id;
END $$;
-- Adds a promotional lot of amount to the project's balance, completed at once, and returns the
-- grant's transaction id.  It pays for usage hours that begin before expires_at (null: never
-- expires), lower priority first, only for the kinds in applies_to (null: all).  The same
-- idempotency key with the same arguments returns the first grant and writes nothing.
CREATE FUNCTION credits.grant_credits(project_id bigint, amount credits.credits, expires_at timestamptz DEFAULT NULL,
                                      priority integer DEFAULT 50, applies_to text[] DEFAULT NULL,
                                      description text DEFAULT NULL, idempotency_key text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    kinds text[];
    id bigint;
BEGIN
    PERFORM credits._require_account(project_id);
    PERFORM credits._require_positive('amount', amount);
    PERFORM credits._require('priority', priority IS NULL);
    PERFORM credits._require_text('description', description, 200);
    PERFORM credits._require_text('idempotency_key', idempotency_key, 200);
    IF priority NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'priority must be between 0 and 100, got %', priority
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF applies_to IS NOT NULL THEN
        IF coalesce(array_ndims(applies_to), 0) <> 1 OR array_position(applies_to, NULL) IS NOT NULL
           OR NOT applies_to <@ ARRAY['instance', 'volume', 'api'] THEN
            RAISE EXCEPTION 'applies_to must list kinds among instance, volume and api, got %', applies_to
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Pass null for a grant that pays for every kind of usage.';
        END IF;
        -- (one order and no repeats, so that a retry with the kinds in another order matches)
        SELECT array_agg(DISTINCT k ORDER BY k) INTO kinds FROM unnest(applies_to) AS k;
    END IF;
    IF idempotency_key IS NOT NULL THEN
        id := credits._grant_by_key(project_id, amount, expires_at, priority, kinds, idempotency_key);
        IF id IS NOT NULL THEN
            RETURN id;
        END IF;
    END IF;
    IF expires_at IS NOT NULL AND expires_at <= credits.now() THEN
        RAISE EXCEPTION 'expires_at % is not in the future', expires_at
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM FROM credits.accounts a WHERE a.project_id = grant_credits.project_id FOR NO KEY UPDATE;
    INSERT INTO credits.transactions AS t (project_id, type, status, amount, created_at, description,
                                           idempotency_key, completed_at)
    VALUES (project_id, 'grant', 'completed', amount, credits.now(), coalesce(description, 'Grant'),
            idempotency_key, credits.now())
    ON CONFLICT DO NOTHING
    RETURNING t.transaction_id INTO id;
    IF id IS NULL THEN
        -- A concurrent call with the same key committed first: answer as it did.
        RETURN credits._grant_by_key(project_id, amount, expires_at, priority, kinds, idempotency_key);
    END IF;
    PERFORM credits._add_lot(project_id, id, 'promotional', amount, expires_at, priority, kinds);
    PERFORM credits._enforce_lots(project_id, credits.now());
    RETURN id;
END $$;
COMMENT ON FUNCTION credits.grant_credits(bigint, credits.credits, timestamptz, integer, text[], text, text) IS 'adds a promotional lot (completed at once) that pays for usage hours beginning before expires_at, lower priority first, of the kinds in applies_to (null: all); returns the grant''s id; idempotent by key (credits_worker)';

-- The data: completed deposits and auto-recharges become paid lots (see above).
INSERT INTO credits.credit_lots (transaction_id, project_id, kind, amount, remaining, used, created_at, active, ended)
SELECT l.transaction_id, l.project_id, 'paid', l.amount, l.remaining, l.amount - l.remaining, l.completed_at,
       l.remaining > '0'::credits.credits,
       CASE WHEN l.remaining = '0'::credits.credits THEN 'used' END
  FROM (SELECT t.transaction_id, t.project_id, t.amount, t.completed_at,
               greatest(least(a.balance - coalesce(sum(t.amount) OVER newer, '0'::credits.credits), t.amount),
                        '0'::credits.credits) AS remaining
          FROM credits.transactions t
          JOIN credits.accounts a ON a.project_id = t.project_id
         WHERE t.type IN ('deposit', 'auto_recharge') AND t.status = 'completed'
        WINDOW newer AS (PARTITION BY t.project_id ORDER BY t.completed_at DESC, t.transaction_id DESC
                         ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)) AS l;

-- The project of the transaction transaction_id (a deposit, auto-recharge, grant, expiry or
-- refund), or null.  Calls about one transaction find it by its id alone: the one index that
-- serves that lookup whatever the statistics say (asked by project as well, the planner may
-- read every transaction of the project instead).
CREATE FUNCTION credits._owner_of(transaction_id bigint) RETURNS bigint
    LANGUAGE sql STABLE
    RETURN (SELECT t.project_id FROM credits.transactions t
             WHERE t.transaction_id = _owner_of.transaction_id AND t.type <> 'usage');

-- Explains why a pending deposit could not be found: unknown, wrong project, or finished.
CREATE OR REPLACE FUNCTION credits._raise_not_pending(project_id bigint, transaction_id bigint, verb text) RETURNS void
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    t credits.transactions;
BEGIN
    SELECT * INTO t FROM credits.transactions x
     WHERE x.transaction_id = _raise_not_pending.transaction_id AND x.type IN ('deposit', 'auto_recharge');
    IF NOT FOUND OR t.project_id <> project_id THEN
        RAISE EXCEPTION 'project % has no deposit %', project_id, transaction_id
            USING ERRCODE = 'no_data_found';
    END IF;
    RAISE EXCEPTION 'cannot % deposit %: it is %', verb, transaction_id, t.status
        USING ERRCODE = 'object_not_in_prerequisite_state',
              DETAIL = 'Only pending deposits can be completed or failed.';
END $$;
-- pending → completed: raises the balance by the deposit in the same transaction (the deposit
-- becomes a paid lot) and returns the new balance.  A completed deposit re-arms auto-recharge.
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

    IF credits._owner_of(transaction_id) = project_id THEN
        UPDATE credits.transactions t
           SET status = 'completed', completed_at = credits.now(), invoice_url = complete_deposit.invoice_url
         WHERE t.transaction_id = complete_deposit.transaction_id
           AND t.type IN ('deposit', 'auto_recharge') AND t.status = 'pending'
        RETURNING t.amount INTO deposited;
    END IF;
    IF deposited IS NULL THEN
        PERFORM credits._raise_not_pending(project_id, transaction_id, 'complete');
    END IF;

    -- (a paid lot: it raises the balance)
    new_balance := credits._add_lot(project_id, transaction_id, 'paid', deposited);
    UPDATE credits.auto_recharge r SET armed = true
     WHERE r.project_id = complete_deposit.project_id AND NOT r.armed;
    PERFORM credits._enforce_lots(project_id, credits.now());
    PERFORM credits._check_spending(project_id);    -- alerts (64_spending_checks.sql)
    RETURN new_balance;
END $$;
-- pending → failed, with the provider's reason.  A failed auto-recharge disarms auto-recharge
-- until a deposit completes or the settings are saved again.
CREATE OR REPLACE FUNCTION credits.fail_deposit(project_id bigint, transaction_id bigint, reason text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    failed_type credits.transaction_type;
BEGIN
    PERFORM credits._require('project_id', project_id IS NULL);
    PERFORM credits._require('transaction_id', transaction_id IS NULL);
    PERFORM credits._require_text('reason', reason, 2000);

    IF credits._owner_of(transaction_id) = project_id THEN
        UPDATE credits.transactions t
           SET status = 'failed', failed_at = credits.now(), failure_reason = fail_deposit.reason
         WHERE t.transaction_id = fail_deposit.transaction_id
           AND t.type IN ('deposit', 'auto_recharge') AND t.status = 'pending'
        RETURNING t.type INTO failed_type;
    END IF;
    IF failed_type IS NULL THEN
        PERFORM credits._raise_not_pending(project_id, transaction_id, 'fail');
    END IF;
    IF failed_type = 'auto_recharge' THEN
        UPDATE credits.auto_recharge r SET armed = false WHERE r.project_id = fail_deposit.project_id;
    END IF;
END $$;
-- The refund an earlier refund_deposit made with this idempotency key, if any; raises when that
-- call had other arguments.
CREATE FUNCTION credits._refund_by_key(project_id bigint, deposit_id bigint, amount credits.credits,
                                       idempotency_key text) RETURNS bigint
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    earlier credits.transactions;
BEGIN
    SELECT * INTO earlier FROM credits.transactions t
     WHERE t.project_id = _refund_by_key.project_id AND t.idempotency_key = _refund_by_key.idempotency_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF earlier.type::text <> 'refund' OR earlier.lot_id <> deposit_id
       OR (amount IS NOT NULL AND -earlier.amount <> amount) THEN
        RAISE EXCEPTION 'idempotency key "%" was already used with other arguments', idempotency_key
            USING ERRCODE = 'unique_violation',
                  DETAIL = format('Transaction %s is a %s of %s.', earlier.transaction_id, earlier.type, earlier.amount);
    END IF;
    RETURN earlier.transaction_id;
END $$;
-- Raises unless transaction_id is a paid lot of the project (a completed deposit or
-- auto-recharge); returns the lot, locked.
CREATE FUNCTION credits._refundable_lot(project_id bigint, transaction_id bigint) RETURNS credits.credit_lots
    LANGUAGE plpgsql AS $$
DECLARE
    t credits.transactions;
    lot credits.credit_lots;
BEGIN
    IF credits._owner_of(transaction_id) = project_id THEN
        SELECT * INTO lot FROM credits.credit_lots l WHERE l.transaction_id = _refundable_lot.transaction_id
           FOR UPDATE;
        IF FOUND AND lot.kind = 'paid' THEN
            RETURN lot;
        END IF;
    END IF;
    SELECT * INTO t FROM credits.transactions x
     WHERE x.transaction_id = _refundable_lot.transaction_id AND x.type <> 'usage';
    IF NOT FOUND OR t.project_id <> _refundable_lot.project_id THEN
        RAISE EXCEPTION 'project % has no deposit %', project_id, transaction_id USING ERRCODE = 'no_data_found';
    ELSIF FOUND AND lot.kind = 'promotional' THEN
        RAISE EXCEPTION 'transaction % is a grant, and grants are not refundable', transaction_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RAISE EXCEPTION 'cannot refund % %: only completed deposits and auto-recharges can be refunded',
        t.status, t.type USING ERRCODE = 'object_not_in_prerequisite_state';
END $$;
-- Requests a refund of amount (null: all that may be refunded) of the completed deposit or
-- auto-recharge transaction_id: a pending refund transaction (returned) that holds the amount,
-- and a refund_requested event carrying the deposit's method and invoice.  At most what is left
-- of that deposit's credits once the accrued usage has drawn on them may be refunded.  The same
-- idempotency key with the same arguments returns the first refund and writes nothing.
CREATE FUNCTION credits.refund_deposit(project_id bigint, transaction_id bigint, amount credits.credits DEFAULT NULL,
                                       reason text DEFAULT NULL, idempotency_key text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    lot credits.credit_lots;
    deposit credits.transactions;
    method credits.payment_methods;
    refundable credits.credits;
    id bigint;
BEGIN
    PERFORM credits._require_account(project_id);
    PERFORM credits._require('transaction_id', transaction_id IS NULL);
    IF amount IS NOT NULL THEN
        PERFORM credits._require_positive('amount', amount);
    END IF;
    PERFORM credits._require_text('reason', reason, 200);
    PERFORM credits._require_text('idempotency_key', idempotency_key, 200);
    IF idempotency_key IS NOT NULL THEN
        id := credits._refund_by_key(project_id, transaction_id, amount, idempotency_key);
        IF id IS NOT NULL THEN
            RETURN id;
        END IF;
    END IF;

    -- The account first (as the deduction locks it), then the lot.
    PERFORM FROM credits.accounts a WHERE a.project_id = refund_deposit.project_id FOR NO KEY UPDATE;
    lot := credits._refundable_lot(project_id, transaction_id);
    SELECT x.left_over INTO refundable FROM credits._lot_standing x
     WHERE x.project_id = refund_deposit.project_id AND x.transaction_id = lot.transaction_id;
    refundable := coalesce(refundable, '0'::credits.credits);
    IF refundable <= '0'::credits.credits OR amount > refundable THEN
        RAISE EXCEPTION 'deposit % has %', transaction_id,
            CASE WHEN refundable <= '0'::credits.credits THEN 'nothing that may be refunded'
                 ELSE format('%s that may be refunded, not %s', refundable, amount) END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Of its %s, %s remains, %s is held by pending refunds, and usage accrued '
                                  'and not yet deducted takes %s.', lot.amount, lot.remaining, lot.held,
                                  lot.remaining - lot.held - refundable),
                  HINT = 'Credits are non-refundable once used.';
    END IF;
    amount := coalesce(amount, refundable);

    SELECT * INTO deposit FROM credits.transactions t WHERE t.transaction_id = lot.transaction_id AND t.type <> 'usage';
    SELECT * INTO method FROM credits.payment_methods m WHERE m.method_id = deposit.method_id;
    INSERT INTO credits.transactions AS t (project_id, type, status, amount, created_at, description, method_id,
                                           idempotency_key, lot_id)
    VALUES (project_id, 'refund', 'pending', -amount, credits.now(),
            'Refund of ' || CASE deposit.type::text WHEN 'deposit' THEN 'deposit' ELSE 'auto-recharge' END
                || coalesce(' (' || reason || ')', ''),
            deposit.method_id, idempotency_key, lot.transaction_id)
    ON CONFLICT DO NOTHING
    RETURNING t.transaction_id INTO id;
    IF id IS NULL THEN
        -- A concurrent call with the same key committed first: answer as it did.
        RETURN credits._refund_by_key(project_id, transaction_id, amount, idempotency_key);
    END IF;
    UPDATE credits.credit_lots l SET held = l.held + refund_deposit.amount WHERE l.transaction_id = lot.transaction_id;
    PERFORM credits._enqueue_event(project_id, 'refund_requested', NULL, id,
        jsonb_build_object('transaction_id', id, 'amount', amount::text,
                           'deposit_transaction_id', deposit.transaction_id, 'method_id', deposit.method_id,
                           'provider_ref', method.provider_ref, 'invoice_url', deposit.invoice_url,
                           'reason', reason, 'idempotency_key', idempotency_key));
    PERFORM credits._enforce_lots(project_id, credits.now());
    RETURN id;
END $$;
-- Settles a pending refund: pending → completed or failed (with the provider's reason), the
-- hold released; a completed one takes its amount from the lot and the balance.  Returns the
-- refund's amount (negative).
CREATE FUNCTION credits._settle_refund(project_id bigint, transaction_id bigint, completed boolean, reason text)
    RETURNS credits.credits
    LANGUAGE plpgsql AS $$
DECLARE
    refund credits.transactions;
    taken credits.credits;
BEGIN
    PERFORM credits._require('project_id', project_id IS NULL);
    PERFORM credits._require('transaction_id', transaction_id IS NULL);
    PERFORM credits._require_text('reason', reason, 2000);
    PERFORM FROM credits.accounts a WHERE a.project_id = _settle_refund.project_id FOR NO KEY UPDATE;
    IF credits._owner_of(transaction_id) = project_id THEN
        UPDATE credits.transactions t
           SET status = CASE WHEN completed THEN 'completed' ELSE 'failed' END::credits.transaction_status,
               completed_at = CASE WHEN completed THEN credits.now() END,
               failed_at = CASE WHEN NOT completed THEN credits.now() END,
               failure_reason = _settle_refund.reason
         WHERE t.transaction_id = _settle_refund.transaction_id
           AND t.type <> 'usage' AND t.type::text = 'refund' AND t.status = 'pending'
        RETURNING t.* INTO refund;
    END IF;
    IF refund.transaction_id IS NULL THEN
        SELECT * INTO refund FROM credits.transactions t
         WHERE t.transaction_id = _settle_refund.transaction_id AND t.type <> 'usage' AND t.type::text = 'refund';
        IF NOT FOUND OR refund.project_id <> project_id THEN
            RAISE EXCEPTION 'project % has no refund transaction %', project_id, transaction_id
                USING ERRCODE = 'no_data_found';
        END IF;
        RAISE EXCEPTION 'cannot % refund transaction %: it is %', CASE WHEN completed THEN 'complete' ELSE 'fail' END,
            transaction_id, refund.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Only pending refunds can be completed or failed.';
    END IF;
    taken := CASE WHEN completed THEN -refund.amount ELSE '0'::credits.credits END;
    UPDATE credits.credit_lots l
       SET held = l.held + refund.amount, remaining = l.remaining - taken,
           active = l.remaining - taken > '0'::credits.credits,
           ended = CASE WHEN l.remaining - taken = '0'::credits.credits THEN 'refunded' END
     WHERE l.transaction_id = refund.lot_id;
    IF completed THEN
        UPDATE credits.accounts a SET balance = a.balance - taken WHERE a.project_id = _settle_refund.project_id;
    END IF;
    PERFORM credits._enforce_lots(project_id, credits.now());
    RETURN refund.amount;
END $$;
-- pending → completed: the refund is paid out; its amount leaves the lot and the balance.
-- Returns the new balance.
CREATE FUNCTION credits.complete_refund(project_id bigint, transaction_id bigint) RETURNS credits.credits
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
BEGIN
    PERFORM credits._settle_refund(project_id, transaction_id, true, NULL);
    RETURN (SELECT a.balance FROM credits.accounts a WHERE a.project_id = complete_refund.project_id);
END $$;
-- pending → failed, with the provider's reason: the held credits are available again.
CREATE FUNCTION credits.fail_refund(project_id bigint, transaction_id bigint, reason text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
BEGIN
    PERFORM credits._settle_refund(project_id, transaction_id, false, reason);
END $$;
COMMENT ON FUNCTION credits.refund_deposit(bigint, bigint, credits.credits, text, text) IS 'requests a refund of a completed deposit''s unused credits (amount null: all that may be): a pending refund that holds them and a refund_requested event; returns its id; grants are never refundable (credits_app)';
COMMENT ON FUNCTION credits.complete_refund(bigint, bigint) IS 'pending refund to completed: its amount leaves the lot and the balance; returns the new balance (credits_worker)';
COMMENT ON FUNCTION credits.fail_refund(bigint, bigint, text) IS 'pending refund to failed, with the provider''s reason: the held credits are available again (credits_worker)';

-- Cuts a project's resources of the kinds given off at time at: books every billing one's time up
-- to at, terminates instances, locks volumes, queues the events.
CREATE FUNCTION credits._cut_off_resources(project_id bigint, kinds text[], at timestamptz) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    r credits.resources;
BEGIN
    FOR r IN SELECT * FROM credits.resources x
              WHERE x.project_id = _cut_off_resources.project_id AND x.state IN ('running', 'available')
                AND x.kind = ANY (kinds)
              ORDER BY x.resource_id FOR UPDATE
    LOOP
        PERFORM credits._book_usage(project_id, r.kind, r.resource_id, r.rate_per_hour, r.accrued_until, at);
        UPDATE credits.resources x
           SET state = CASE r.kind WHEN 'instance' THEN 'terminated' ELSE 'inaccessible' END,
               state_since = at, accrued_until = NULL
         WHERE x.project_id = _cut_off_resources.project_id AND x.resource_id = r.resource_id;
        PERFORM credits._enqueue_event(project_id,
            CASE r.kind WHEN 'instance' THEN 'instance_terminated' ELSE 'volume_inaccessible' END,
            r.resource_id, NULL,
            jsonb_build_object('resource_id', r.resource_id, 'kind', r.kind, 'at', at)
                || credits._retention_payload(r.kind, at));
    END LOOP;
END $$;
-- Cuts a project off at time at: every instance and volume (credits._cut_off_resources), and
-- balance_depleted queued.
CREATE OR REPLACE FUNCTION credits._cut_off(project_id bigint, at timestamptz) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    balance credits.credits;
BEGIN
    PERFORM credits._cut_off_resources(project_id, ARRAY['instance', 'volume'], at);
    SELECT a.balance INTO balance FROM credits.accounts a WHERE a.project_id = _cut_off.project_id;
    PERFORM credits._enqueue_event(project_id, 'balance_depleted', NULL, NULL,
        jsonb_build_object('balance', balance::text, 'at', at));
END $$;
-- What is left of each lot (given in draw-down order) once the hours (given oldest first, with
-- their kind bits and amounts) have drawn on them; src/lots.c.
CREATE FUNCTION credits._lots_left(lot_left credits.credits[], lot_expires timestamptz[], lot_kinds integer[],
                                   hour_start timestamptz[], hour_kind integer[], hour_amount credits.credits[])
    RETURNS credits.credits[]
    AS 'MODULE_PATHNAME', 'credits_lots_left' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
-- What each hour (given in the deduction's order, with their kind bits and amounts) takes from
-- the lots (given in draw-down order); the rest of its amount it would leave uncollected.
-- src/lots.c, the same draw-down as credits._lots_left.
CREATE FUNCTION credits._lots_paid(lot_left credits.credits[], lot_expires timestamptz[], lot_kinds integer[],
                                   hour_start timestamptz[], hour_kind integer[], hour_amount credits.credits[])
    RETURNS credits.credits[]
    AS 'MODULE_PATHNAME', 'credits_lots_paid' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Each project's active lots as arrays in draw-down order: lowest priority, soonest expiry
-- (none last), promotional before paid, oldest; what usage may take of each (pending refunds
-- hold their part), its expiry and its kind bits.  Read it with a project_id filter.
CREATE VIEW credits._lot_queue AS
SELECT l.project_id,
       array_agg(l.transaction_id ORDER BY l.priority, l.expires_at NULLS LAST, l.kind DESC,
                                           l.created_at, l.transaction_id) AS ids,
       array_agg(l.remaining - l.held ORDER BY l.priority, l.expires_at NULLS LAST, l.kind DESC,
                                              l.created_at, l.transaction_id) AS lefts,
       array_agg(l.expires_at ORDER BY l.priority, l.expires_at NULLS LAST, l.kind DESC,
                                       l.created_at, l.transaction_id) AS expires,
       array_agg(credits._kind_mask(l.applies_to) ORDER BY l.priority, l.expires_at NULLS LAST,
                                                        l.kind DESC, l.created_at, l.transaction_id) AS kinds
  FROM credits.credit_lots l
 WHERE l.active
 GROUP BY l.project_id;

-- Each project's usage accrued and not yet deducted as arrays in the deduction's order: oldest
-- hour first, within an hour stored rows by id, then the others by resource id in byte order;
-- each hour's row id (null while not stored), resource, description, start, kind bit and charge.
-- Read it with a project_id filter.  (Each hour's resource is looked up by its key: a join
-- would read every resource the project ever had, whatever it accrues.)
CREATE VIEW credits._accrued_queue AS
SELECT u.project_id,
       array_agg(u.transaction_id ORDER BY u.usage_hour, u.transaction_id NULLS LAST, u.resource_id COLLATE "C") AS ids,
       array_agg(u.resource_id ORDER BY u.usage_hour, u.transaction_id NULLS LAST, u.resource_id COLLATE "C") AS resource_ids,
       array_agg(u.description ORDER BY u.usage_hour, u.transaction_id NULLS LAST, u.resource_id COLLATE "C") AS descriptions,
       array_agg(u.usage_hour ORDER BY u.usage_hour, u.transaction_id NULLS LAST, u.resource_id COLLATE "C") AS hours,
       array_agg(CASE (SELECT r.kind FROM credits.resources r
                        WHERE r.project_id = u.project_id AND r.resource_id = u.resource_id)
                 WHEN 'instance' THEN 1 WHEN 'volume' THEN 2 ELSE 4 END
                 ORDER BY u.usage_hour, u.transaction_id NULLS LAST, u.resource_id COLLATE "C") AS kinds,
       array_agg(-u.amount ORDER BY u.usage_hour, u.transaction_id NULLS LAST, u.resource_id COLLATE "C") AS amounts
  FROM credits.usage_in_progress u
 GROUP BY u.project_id;

-- Each active lot with what usage may still take of it once the usage accrued and not yet
-- deducted has drawn on it (credits._lots_left).  Read it with a project_id filter: it reaches
-- both sides.  (A view, not a function: it reads the tables with its owner's rights when a
-- reader's view reads it.)
CREATE VIEW credits._lot_standing AS
SELECT lots.project_id, x.transaction_id, x.left_over, x.expires_at, x.kinds
  FROM credits._lot_queue lots
  LEFT JOIN credits._accrued_queue accrued ON accrued.project_id = lots.project_id,
       unnest(lots.ids, credits._lots_left(lots.lefts, lots.expires, lots.kinds,
                                           coalesce(accrued.hours, '{}'), coalesce(accrued.kinds, '{}'),
                                           coalesce(accrued.amounts, '{}')),
              lots.expires, lots.kinds) AS x(transaction_id, left_over, expires_at, kinds);

-- What the hours given (in the deduction's order, with their kind bits and amounts) would take
-- from the project's lots (credits._lots_paid over credits._lot_queue).  SECURITY DEFINER: the
-- history's readers may not read the lots; a function, not a join of the two grouped views, so
-- that the planner's estimate of that join (every project's lots by every project's hours) does
-- not make it compile the history of one project.
CREATE FUNCTION credits._lots_paid_for(project_id bigint, hour_start timestamptz[], hour_kind integer[],
                                       hour_amount credits.credits[]) RETURNS credits.credits[]
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
BEGIN ATOMIC
    SELECT credits._lots_paid(coalesce(q.lefts, '{}'), coalesce(q.expires, '{}'), coalesce(q.kinds, '{}'),
                              _lots_paid_for.hour_start, _lots_paid_for.hour_kind, _lots_paid_for.hour_amount)
      FROM (VALUES (_lots_paid_for.project_id)) AS p(project_id)
      LEFT JOIN credits._lot_queue q ON q.project_id = p.project_id;
END;

-- Each hour of usage accrued and not yet deducted, with its charge and what it would take from
-- the project's lots if it were deducted now (credits._lots_paid_for, in the deduction's order):
-- the accumulating rows of credits.transaction_history.  Read it with a project_id filter.
CREATE VIEW credits._accrued_taken AS
SELECT accrued.project_id, x.transaction_id, x.resource_id, x.usage_hour, x.description, x.charge, x.taken
  FROM credits._accrued_queue accrued,
       unnest(accrued.ids, accrued.resource_ids, accrued.descriptions, accrued.hours, accrued.amounts,
              credits._lots_paid_for(accrued.project_id, accrued.hours, accrued.kinds, accrued.amounts))
           AS x(transaction_id, resource_id, description, usage_hour, charge, taken);
-- One row per transaction, newest first; usage hours not yet deducted show as accumulating
-- (with a null transaction_id while they have no stored row yet).  Amounts add up: over the
-- completed rows to the balance (a completed usage hour's amount is what it took from the
-- balance, its uncollected the rest of its charge), and with the accumulating rows to the
-- available balance.  An accumulating hour shows what it would take if it were deducted now: the
-- project's charges not yet deducted are drawn from its lots as the deduction will draw them
-- (credits._accrued_taken), and what the lots that may pay for it would not cover shows as
-- uncollected.
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
           -u.taken, 'accumulating'::credits.transaction_status, u.charge - u.taken
      FROM credits._accrued_taken u) AS h
 ORDER BY h.date DESC, h.transaction_id DESC NULLS FIRST;
-- What a project can still spend on the kinds in kind_bits (instance 1, volume 2, api 4) for
-- usage that begins at as_of: what its lots that may pay for it have left after the accrued usage.
CREATE FUNCTION credits._spendable(project_id bigint, kind_bits integer, as_of timestamptz)
    RETURNS credits.credits
    LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT coalesce(sum(x.left_over), '0'::credits.credits)
      FROM credits._lot_standing x
     WHERE x.project_id = _spendable.project_id
       AND (x.kinds & _spendable.kind_bits) <> 0 AND (x.expires_at IS NULL OR x.expires_at > _spendable.as_of);
END;
-- What a project can spend on anything now, lot by lot (credits._spendable).  SECURITY DEFINER:
-- balance_overview calls it for projects whose lots are not all alike, for readers who may not
-- read the tables (and, never inlined, its plan stays out of the view's).
CREATE FUNCTION credits._lots_available(project_id bigint) RETURNS credits.credits
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
    RETURN credits._spendable(project_id, 7, credits.now());
-- What the project can still spend: its lots (those not expired) less the usage accrued and not
-- yet deducted and less pending refunds, never below zero.  Without grants or refunds that is
-- the balance less the accrued usage (credits._available).  An unknown project raises P0002 (and a null one 22004)
-- rather than answering null.
CREATE OR REPLACE FUNCTION credits.available_balance(project_id bigint) RETURNS credits.credits
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
    SELECT credits._lots_available(a.project_id)
      FROM credits.accounts a
     WHERE a.project_id = (SELECT credits._require_account(available_balance.project_id));
$$;
-- Applies the zero-balance rule kind by kind to a project whose lots are not all alike (some
-- expire, pay only for some kinds, or are held by a refund), or that is cut off, at time at: its instances are cut
-- off when no lot that may pay for the current hour of an instance has anything left after the
-- accrued usage, its volumes likewise; with neither left the whole project is depleted (as at
-- zero balance); a volume lot with something left makes locked volumes available again.  Other
-- projects are left to the rule of the balance (credits._due_projects, src/zero_balance.c).
-- Returns whether it acted.
CREATE FUNCTION credits._enforce_lots(project_id bigint, at timestamptz) RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    hour timestamptz := credits.hour_of(at);
    is_depleted boolean;
    for_instances credits.credits;
    for_volumes credits.credits;
    acted boolean := false;
BEGIN
    SELECT a.depleted INTO is_depleted FROM credits.accounts a
     WHERE a.project_id = _enforce_lots.project_id FOR NO KEY UPDATE;
    IF NOT is_depleted
       AND NOT EXISTS (SELECT FROM credits.credit_lots l
                        WHERE l.project_id = _enforce_lots.project_id AND l.active
                          AND (l.expires_at IS NOT NULL OR l.applies_to IS NOT NULL OR l.held > '0'::credits.credits)) THEN
        RETURN false;
    END IF;
    for_instances := credits._spendable(project_id, 1, hour);
    for_volumes := credits._spendable(project_id, 2, hour);
    IF NOT is_depleted AND for_instances <= '0'::credits.credits AND for_volumes <= '0'::credits.credits THEN
        UPDATE credits.accounts a SET depleted = true WHERE a.project_id = _enforce_lots.project_id;
        RETURN true;
    ELSIF is_depleted AND (for_instances > '0'::credits.credits OR for_volumes > '0'::credits.credits) THEN
        UPDATE credits.accounts a SET depleted = false WHERE a.project_id = _enforce_lots.project_id;
        acted := true;
    ELSIF is_depleted THEN
        RETURN false;
    END IF;
    IF for_instances <= '0'::credits.credits
       AND EXISTS (SELECT FROM credits.resources r WHERE r.project_id = _enforce_lots.project_id
                                                      AND r.state = 'running') THEN
        PERFORM credits._cut_off_resources(project_id, ARRAY['instance'], at);
        acted := true;
    END IF;
    IF for_volumes <= '0'::credits.credits
       AND EXISTS (SELECT FROM credits.resources r WHERE r.project_id = _enforce_lots.project_id
                                                      AND r.state = 'available') THEN
        PERFORM credits._cut_off_resources(project_id, ARRAY['volume'], at);
        acted := true;
    ELSIF for_volumes > '0'::credits.credits
          AND EXISTS (SELECT FROM credits.resources r WHERE r.project_id = _enforce_lots.project_id
                                                         AND r.state = 'inaccessible') THEN
        PERFORM credits._restore_volumes(project_id, at);
        acted := true;
    END IF;
    RETURN acted;
END $$;
DROP FUNCTION credits._require_available_balance(bigint);
-- Raises unless the project may start a resource of kind: not cut off, and something left for
-- that kind in its lots (credits._spendable: after the accrued usage, not expired).  Takes a
-- share lock on the account so that a concurrent cut-off waits for this transaction and then
-- sees (and terminates) what it started.
CREATE FUNCTION credits._require_available_balance(project_id bigint, kind text) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    is_depleted boolean;
BEGIN
    SELECT a.depleted INTO is_depleted FROM credits.accounts a
     WHERE a.project_id = _require_available_balance.project_id FOR SHARE;
    IF is_depleted OR credits._spendable(project_id, CASE kind WHEN 'instance' THEN 1 ELSE 2 END,
                                         credits.now()) <= '0'::credits.credits THEN
        IF credits._spendable(project_id, 7, credits.now()) > '0'::credits.credits THEN
            RAISE EXCEPTION 'project % has no available balance', project_id
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('None of its credits may pay for %ss.', kind),
                      HINT = 'Add credits with credits.add_credits() first.';
        END IF;
        RAISE EXCEPTION 'project % has no available balance', project_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Add credits with credits.add_credits() first.';
    END IF;
END $$;
-- Starts billing a resource (start_instance, attach_volume): creates it, restarts a stopped
-- instance, or changes the rate of one already billing (the time so far is booked at the old
-- rate).  Calling it again with the same rate does nothing.
-- The end of the last hour a lot expiring at expires_at pays for: every hour before it begins
-- before expires_at.
-- (STABLE, as timestamptz - interval is: declared IMMUTABLE it would not be inlined, and each
-- call would run as a function of its own.)
CREATE FUNCTION credits._paying_until(expires_at timestamptz) RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN credits.hour_of(expires_at - interval '1 microsecond') + interval '1 hour';
-- Writes the expiry of every lot whose last hour has ended (before cur, the current hour) and
-- whose project has deducted every hour before that end: nothing booked, rolled up or billing
-- from before it remains.  Set-based: the accounts are locked in project order, then one
-- statement writes the expiries, ends the lots and debits the accounts (the zero-balance
-- trigger cuts off a project whose balance reaches zero; the balance check judges the kinds).
-- Returns the number of lots expired.  The caller holds the periodic-run lock.
CREATE FUNCTION credits._expire_lots(cur timestamptz, at timestamptz) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    lot_ids bigint[];
    project_ids bigint[];
    expired bigint;
BEGIN
    SELECT array_agg(l.transaction_id), array_agg(DISTINCT l.project_id) INTO lot_ids, project_ids
      FROM credits.credit_lots l
      JOIN credits.accounts a ON a.project_id = l.project_id
     WHERE l.active AND l.expires_at IS NOT NULL AND l.expires_at <= cur
       AND credits._paying_until(l.expires_at) <= cur
       AND NOT EXISTS (SELECT FROM credits.transactions t
                        WHERE t.project_id = l.project_id AND t.status = 'accumulating'
                          AND t.usage_hour < credits._paying_until(l.expires_at))
       AND NOT EXISTS (SELECT FROM credits.usage_rollup u
                        WHERE u.project_id = l.project_id AND u.usage_hour < credits._paying_until(l.expires_at))
       AND NOT EXISTS (SELECT FROM credits.resources r
                        WHERE r.project_id = l.project_id AND r.accrued_until IS NOT NULL
                          AND greatest(r.accrued_until, a.deducted_until) < credits._paying_until(l.expires_at));
    IF lot_ids IS NULL THEN
        RETURN 0;
    END IF;
    -- The accounts first, in project order, then the lots (the order of every path).
    PERFORM FROM credits.accounts a WHERE a.project_id = ANY (project_ids) ORDER BY a.project_id FOR NO KEY UPDATE;
    WITH due AS (
        SELECT l.transaction_id, l.project_id, l.remaining, l.expires_at FROM credits.credit_lots l
         WHERE l.transaction_id = ANY (lot_ids) AND l.active FOR UPDATE),
    written AS (
        INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, lot_id,
                                          completed_at)
        SELECT d.project_id, 'expiry', 'completed', -d.remaining, d.expires_at, 'Expired: ' || g.description,
               d.transaction_id, at
          FROM due d JOIN credits.transactions g ON g.transaction_id = d.transaction_id AND g.type <> 'usage'
         ORDER BY d.project_id, d.transaction_id),
    ended AS (
        UPDATE credits.credit_lots l SET remaining = '0', active = false, ended = 'expired'
          FROM due d WHERE l.transaction_id = d.transaction_id),
    debited AS (
        UPDATE credits.accounts a SET balance = a.balance - x.total
          FROM (SELECT d.project_id, sum(d.remaining) AS total FROM due d GROUP BY d.project_id) AS x
         WHERE a.project_id = x.project_id)
    SELECT count(*) INTO expired FROM due;
    RETURN expired;
END $$;
-- The projects whose lots are not all alike: some active lot expires, pays only for some
-- kinds, or is partly held by a pending refund.
CREATE FUNCTION credits._special_projects() RETURNS SETOF bigint
    LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT DISTINCT l.project_id FROM credits.credit_lots l
     WHERE l.active AND (l.expires_at IS NOT NULL OR l.applies_to IS NOT NULL OR l.held > '0'::credits.credits);
END;
-- Completes and deducts every usage hour that has ended and is not yet deducted, oldest first,
-- and starts the auto-recharges that the new balances call for.  Returns the number of usage
-- transactions completed.
-- (jit = off in both periodic runs: the row estimates of the hour segments are far too high,
-- and compiling the plans cost more than running them, about 1 s per run at 100,000 projects.)
DROP FUNCTION credits._due_projects();
-- The projects a periodic run may have to act on, found in one pass over the accounts with
-- their usage accrued and not yet deducted (the costly part, computed once per run): those
-- not cut off whose accrued usage has used up the balance, and those whose armed auto-recharge
-- finds the available balance below its threshold.  Each list comes with the accrued usage of
-- its projects, in project order.  (BEGIN ATOMIC: bound at install time, whatever the
-- caller's search_path.  The planner expects 1000 hour segments per resource and 200
-- projects, so left alone it nested-loops 100,000 index probes into accounts and sizes a
-- hash table for millions of groups; sorting in memory and no nested loops take a third of
-- the time at 100,000 projects.)
CREATE FUNCTION credits._due_projects(OUT used_up_ids bigint[], OUT used_up_accrued credits.credits[],
                                      OUT recharge_ids bigint[], OUT recharge_accrued credits.credits[],
                                      OUT special_ids bigint[])
    LANGUAGE sql STABLE
    SET work_mem = '64MB' SET enable_hashagg = off SET enable_nestloop = off
BEGIN ATOMIC
    WITH positions AS (
        SELECT a.project_id, a.balance, a.depleted, u.accumulating,
               coalesce(u.accumulating, '0'::credits.credits) AS accrued,
               coalesce(r.enabled AND r.armed, false) AS recharging, r.threshold,
               s.project_id IS NOT NULL AS special, s.for_instances, s.for_volumes
          FROM credits.accounts a
          LEFT JOIN credits.accumulating_by_project u ON u.project_id = a.project_id
          LEFT JOIN credits.auto_recharge r ON r.project_id = a.project_id
          LEFT JOIN (SELECT l.project_id,
                            coalesce(sum(l.remaining - l.held)
                                         FILTER (WHERE (credits._kind_mask(l.applies_to) & 1) <> 0
                                                   AND (l.expires_at IS NULL OR l.expires_at > credits.hour_of(credits.now()))),
                                     '0'::credits.credits) AS for_instances,
                            coalesce(sum(l.remaining - l.held)
                                         FILTER (WHERE (credits._kind_mask(l.applies_to) & 2) <> 0
                                                   AND (l.expires_at IS NULL OR l.expires_at > credits.hour_of(credits.now()))),
                                     '0'::credits.credits) AS for_volumes
                       FROM credits.credit_lots l
                      WHERE l.active AND l.project_id IN (SELECT x FROM credits._special_projects() AS x)
                      GROUP BY l.project_id) AS s ON s.project_id = a.project_id
         WHERE u.project_id IS NOT NULL OR (r.enabled AND r.armed)),
    -- (a project whose lots are not all alike: what it can spend is what its lots have left,
    -- given as the accrued usage that leaves that much of the balance; credits._enforce_lots
    -- judges its cut-off)
    standing AS (
        SELECT p.*,
               CASE WHEN p.special AND p.recharging
                    THEN p.balance - credits._spendable(p.project_id, 7, credits.now())
                    ELSE p.accrued END AS effective_accrued
          FROM positions p),
    flagged AS (
        SELECT p.project_id, p.effective_accrued AS accrued,
               NOT p.special AND NOT p.depleted AND p.balance <= p.accumulating AS used_up,
               p.recharging AND credits._available(p.balance, p.effective_accrued) < p.threshold AS recharge,
               -- (its lots for a kind cannot all be left over when the accrued usage, whatever
               -- its kind, is at least what they hold)
               p.special AND (p.depleted OR p.for_instances <= p.accrued OR p.for_volumes <= p.accrued) AS judge
          FROM standing p)
    SELECT coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.used_up), '{}'),
           coalesce(array_agg(f.accrued ORDER BY f.project_id) FILTER (WHERE f.used_up), '{}'),
           coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.recharge), '{}'),
           coalesce(array_agg(f.accrued ORDER BY f.project_id) FILTER (WHERE f.recharge), '{}'),
           coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.judge), '{}')
      FROM flagged f;
END;
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
    PERFORM credits._expire_lots(credits.hour_of(at), at);
    -- Both lists from one computation of the accrued usage (the cut-off books live usage into
    -- usage transactions, which leaves each project's total as it was).
    SELECT * INTO due FROM credits._due_projects();
    -- Projects whose lots are not all alike are judged kind by kind, lot by lot.
    SELECT coalesce(array_agg(l.project_id), '{}') INTO cut_off
      FROM unnest(due.special_ids) AS l(project_id)
     WHERE credits._enforce_lots(l.project_id, at);

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
    SELECT cut_off || coalesce(array_agg(f.project_id), '{}') INTO cut_off FROM flagged f;

    recharged := credits._start_auto_recharges(due.recharge_ids, due.recharge_accrued);
    -- Spending controls and volume retention (64_spending_checks.sql, 65_volume_retention.sql).
    controlled := credits._watch_spending(at) || credits._enforce_volume_retention(at);
    RETURN (SELECT count(*) FROM (SELECT unnest(cut_off) UNION SELECT unnest(recharged)
                                  UNION SELECT unnest(controlled)) AS acted);
END $$;
-- One row per project: balance, usage accumulating, what is available, burn rate and runway.
-- hours_remaining is rounded to 0.01 h; runs_out_at uses the exact quotient, to the second.
-- The accrued usage and the burn rate are joined per project from views grouped by project:
-- read with a project_id filter, the filter reaches inside them (one project's rows through
-- its indexes); read for every project, each is one set-based pass (hash joins), not a plan
-- run once per project.  (The view reads the tables with its owner's rights, so readers need
-- no SECURITY DEFINER.)
CREATE OR REPLACE VIEW credits.balance_overview AS
SELECT a.project_id,
       a.balance AS current_balance,
       v.accumulating,
       v.available_balance,
       v.burn_rate,
       CASE WHEN v.burn_rate > '0'::credits.credits
            THEN round(v.available_balance / v.burn_rate, 2) END AS hours_remaining,
       CASE WHEN v.burn_rate > '0'::credits.credits
            THEN date_trunc('second', credits.now() + (v.available_balance / v.burn_rate) * interval '1 hour')
       END AS runs_out_at,
       coalesce(r.enabled, false) AS auto_recharge_enabled
  FROM credits.accounts a
  LEFT JOIN credits.auto_recharge r ON r.project_id = a.project_id
  LEFT JOIN credits.accumulating_by_project u ON u.project_id = a.project_id
  LEFT JOIN credits._burn_rate_by_project b ON b.project_id = a.project_id
  CROSS JOIN LATERAL (
      SELECT coalesce(u.accumulating, '0'::credits.credits) AS accumulating,
             -- (what the lots have left after the accrued usage, as credits.available_balance();
             -- when they are all alike that is the balance less the accrued usage)
             CASE WHEN NOT EXISTS (SELECT FROM credits.credit_lots l
                                    WHERE l.project_id = a.project_id AND l.active
                                      AND (l.expires_at IS NOT NULL OR l.applies_to IS NOT NULL
                                           OR l.held > '0'::credits.credits))
                  THEN credits._available(a.balance, u.accumulating)
                  ELSE credits._lots_available(a.project_id)
             END AS available_balance,
             coalesce(b.burn_rate, '0'::credits.credits) AS burn_rate) AS v;
-- One row per credit lot: every completed deposit and auto-recharge (paid) and every grant
-- (promotional), with what remains of it and its state: active while something remains, else
-- used (by usage), expired or refunded (what took its last credits).
CREATE VIEW credits.lots AS
SELECT l.project_id, l.transaction_id, l.kind, l.amount, l.remaining, l.expires_at, l.priority, l.applies_to,
       coalesce(l.ended, 'active') AS state
  FROM credits.credit_lots l;
COMMENT ON VIEW credits.lots IS 'one row per credit lot (completed deposit, auto-recharge or grant): kind paid or promotional, amount, remaining, expiry, priority, kinds it pays for, state';
-- The checks of credits.verify() for the project scope_id, or for all when it is null.  An
-- unknown project is an error (P0002), not a clean result.  For one project its transactions
-- are read through the indexes (deposits by the history index, usage hour by hour); for all,
-- the whole table.  Planned for each call with scope_id's value (a custom plan): the branches
-- of the other scope are gone before the planner sees the query, and a generic plan, which
-- statistics skewed by other projects could turn into a scan of every project's rows, is never
-- used.  (jit = off: compiling the plan over every project cost more than running it.)
-- Raises 22023 unless [from_time, to_time) is a non-empty period (22004 when a bound is null).
CREATE FUNCTION credits._require_period(from_time timestamptz, to_time timestamptz) RETURNS void
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM credits._require('from_time', from_time IS NULL);
    PERFORM credits._require('to_time', to_time IS NULL);
    IF NOT from_time < to_time OR NOT isfinite(from_time) OR NOT isfinite(to_time) THEN
        RAISE EXCEPTION 'the period [%, %) is empty or unbounded', from_time, to_time
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;
-- The project's completed usage transactions dated from from_time on (its hours in
-- [from_time, deducted_until)), less the hours in skipped (a statement's summed days), found
-- in the usage index by hour and project: one index scan given every hour as an array
-- (credits.transactions' usage index is ordered by hour first).  (The hours are computed once,
-- from the account alone: an array that depended on a joined row was recomputed for every
-- usage row.  BEGIN ATOMIC, inlined where it is read.)
CREATE FUNCTION credits._usage_since(project_id bigint, from_time timestamptz,
                                     skipped tstzmultirange DEFAULT '{}')
    RETURNS SETOF credits.transactions
    LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT t.*
      FROM credits.transactions t
     WHERE t.project_id = _usage_since.project_id
       AND t.type = 'usage' AND t.status = 'completed'
       AND t.usage_hour = ANY (ARRAY(
               SELECT h
                 FROM credits.accounts a,
                      generate_series(greatest(a.deducted_from,
                                               credits.hour_of(from_time - interval '1 microsecond') + interval '1 hour'),
                                      a.deducted_until - interval '1 hour', interval '1 hour') AS h
                WHERE a.project_id = _usage_since.project_id AND NOT h <@ skipped));
END;
-- A project's statement for [from_time, to_time): the lines opening_balance, deposits
-- (deposits and auto-recharges), grants, one usage line per resource (what the balance paid,
-- negative), expired, refunded, closing_balance, and uncollected (what usage the balance could
-- not pay; information only).  One pass over what is dated from from_time on sums it by line,
-- resource and whether it is in the period; the lines are read from those few sums.  Usage is
-- read from the daily summaries for the summed days after from_time that lie wholly inside the
-- period or wholly after it (summed), and from the usage rows for every other hour.
CREATE FUNCTION credits.statement(project_id bigint, from_time timestamptz, to_time timestamptz)
    RETURNS TABLE (line text, resource_id text, amount credits.credits)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
    SET enable_seqscan = off AS $$
DECLARE
    -- (the first midnight at or after a time)
    day_after_from timestamptz := date_trunc('day', from_time - interval '1 microsecond', 'UTC') + interval '1 day';
    day_after_to timestamptz := date_trunc('day', to_time - interval '1 microsecond', 'UTC') + interval '1 day';
    summed tstzmultirange;
BEGIN
    PERFORM credits._require_account(project_id);
    PERFORM credits._require_period(from_time, to_time);
    -- the project's summed days from from_time on, less the day to_time falls inside
    SELECT tstzmultirange(tstzrange(s.summarized_from, s.summarized_until))
           * tstzmultirange(tstzrange(day_after_from, greatest(day_after_from, date_trunc('day', to_time, 'UTC'))),
                            tstzrange(day_after_to, NULL))
      INTO summed
      FROM credits.usage_days_summarized s WHERE s.project_id = statement.project_id;
    summed := coalesce(summed, '{}');
    -- (planned for each call's arguments: a plan kept for any arguments guesses few rows and
    -- sorts them to sum them by resource; planned for the call, they are summed in a hash)
    RETURN QUERY EXECUTE $q$
    WITH since AS MATERIALIZED (
        -- every completed transaction dated from from_time on, summed by the line it counts in
        -- (usage by resource) and by whether it is in the period
        SELECT x.line, x.resource_id, x.in_period, sum(x.amount) AS amount, sum(x.uncollected) AS uncollected
          FROM (SELECT CASE t.type::text WHEN 'deposit' THEN 'deposits' WHEN 'auto_recharge' THEN 'deposits'
                                         WHEN 'grant' THEN 'grants' WHEN 'expiry' THEN 'expired' ELSE 'refunded' END AS line,
                       NULL::text AS resource_id, t.amount, '0'::credits.credits AS uncollected,
                       t.created_at < $3 AS in_period
                  FROM credits.transactions t
                 WHERE t.project_id = $1 AND t.type <> 'usage' AND t.status = 'completed'
                   AND t.created_at >= $2
                UNION ALL
                SELECT 'usage', u.resource_id, u.amount, u.uncollected, u.created_at < $3
                  FROM credits._usage_since($1, $2, $4) AS u
                UNION ALL
                SELECT 'usage', d.resource_id, d.amount, d.uncollected, d.day < $3
                  FROM credits.usage_days d
                 WHERE d.project_id = $1 AND d.day <@ $4) AS x
         GROUP BY x.line, x.resource_id, x.in_period),
    ends AS (
        -- the balance less everything dated from from_time on is the opening balance
        SELECT a.balance - coalesce((SELECT sum(x.amount) FROM since x), '0'::credits.credits) AS opening,
               a.balance - coalesce((SELECT sum(x.amount) FROM since x WHERE NOT x.in_period),
                                    '0'::credits.credits) AS closing
          FROM credits.accounts a WHERE a.project_id = $1),
    lines AS (
        SELECT 1 AS ord, 'opening_balance' AS line, NULL::text AS resource_id, e.opening AS amount FROM ends e
        UNION ALL
        SELECT l.ord, l.line, NULL, coalesce((SELECT sum(x.amount) FROM since x WHERE x.in_period AND x.line = l.line),
                                             '0'::credits.credits)
          FROM (VALUES (2, 'deposits'), (3, 'grants'), (5, 'expired'), (6, 'refunded')) AS l(ord, line)
        UNION ALL
        SELECT 4, 'usage', x.resource_id, x.amount FROM since x WHERE x.in_period AND x.line = 'usage'
        UNION ALL
        SELECT 7, 'closing_balance', NULL, e.closing FROM ends e
        UNION ALL
        SELECT 8, 'uncollected', NULL, coalesce((SELECT sum(x.uncollected) FROM since x WHERE x.in_period),
                                                '0'::credits.credits))
    SELECT l.line, l.resource_id, l.amount FROM lines l ORDER BY l.ord, l.resource_id$q$
    USING project_id, from_time, to_time, summed;
END $$;
-- A project's usage in [from_time, to_time) by resource and bucket (buckets of the given
-- length from from_time on): the kind, the hours charged, what they charged and what the
-- balance paid of it (both positive).  Completed usage hours only, dated by their start.
CREATE FUNCTION credits.usage_by_resource(project_id bigint, from_time timestamptz, to_time timestamptz,
                                          bucket interval DEFAULT '1 day')
    RETURNS TABLE (bucket_start timestamptz, resource_id text, kind text, hours integer,
                   charged credits.credits, collected credits.credits)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
    SET enable_seqscan = off AS $$
BEGIN
    PERFORM credits._require_account(project_id);
    PERFORM credits._require_period(from_time, to_time);
    PERFORM credits._require('bucket', bucket IS NULL);
    IF bucket <= interval '0' OR date_part('month', bucket) <> 0 OR date_part('year', bucket) <> 0 THEN
        RAISE EXCEPTION 'bucket must be a positive interval without months, got %', bucket
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT date_bin(bucket, u.usage_hour, from_time), u.resource_id, coalesce(r.kind, 'api'), count(*)::integer,
           sum(u.uncollected - u.amount), -sum(u.amount)
      FROM credits._usage_since(usage_by_resource.project_id, from_time) AS u
      LEFT JOIN credits.resources r ON r.project_id = u.project_id AND r.resource_id = u.resource_id
     WHERE u.usage_hour < to_time
     GROUP BY 1, 2, 3
     ORDER BY 1, 2;
END $$;
COMMENT ON FUNCTION credits.statement(bigint, timestamptz, timestamptz) IS 'a project''s statement of the completed transactions dated in [from_time, to_time): opening_balance, deposits, grants, usage per resource, expired, refunded, closing_balance, uncollected';
COMMENT ON FUNCTION credits.usage_by_resource(bigint, timestamptz, timestamptz, interval) IS 'a project''s completed usage in [from_time, to_time) by bucket and resource: kind, hours, charged and collected';

-- Internal functions and everything that writes are not for PUBLIC.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'credits'::regnamespace
                -- (record_usage writes in C without SECURITY DEFINER: see 43_record_usage.sql)
                AND (p.proname LIKE '\_%' OR p.prosecdef
                     OR p.proname IN ('schedule_jobs', 'unschedule_jobs', 'record_usage'))
                AND p.proname NOT IN ('_burn_rate_accum', '_burn_rate_combine', '_accrual',
                                      '_accrued_amount', '_hour_segments', '_describe',
                                      '_usage_total', '_units_sum', '_max_id_chars', '_max_amount', '_available',
                                      '_kind_mask', '_lots_left',
                                      -- (spending_overview computes with these)
                                      '_below_balance', '_below_runway', '_budget_hit',
                                      -- minimum_deposit() reads it: a setting anyone may SHOW
                                      '_minimum_deposit_text')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END $$;
GRANT SELECT ON credits.lots TO credits_reader;
GRANT EXECUTE ON FUNCTION credits._lots_available(bigint),
                          credits._lots_paid_for(bigint, timestamptz[], integer[], credits.credits[]) TO credits_reader;
GRANT EXECUTE ON FUNCTION credits.statement(bigint, timestamptz, timestamptz),
                          credits.usage_by_resource(bigint, timestamptz, timestamptz, interval) TO credits_reader;
GRANT EXECUTE ON FUNCTION credits.refund_deposit(bigint, bigint, credits.credits, text, text) TO credits_app;
GRANT EXECUTE ON FUNCTION
    credits.grant_credits(bigint, credits.credits, timestamptz, integer, text[], text, text),
    credits.complete_refund(bigint, bigint),
    credits.fail_refund(bigint, bigint, text)
  TO credits_worker;
SELECT pg_catalog.pg_extension_config_dump('credits.credit_lots', '');
COMMENT ON FUNCTION credits.available_balance(bigint) IS 'what a project can still spend: what its lots not expired have left once the usage accrued and not yet deducted has drawn on them, less pending refunds (without grants or refunds: the balance less the accrued usage), never below zero';
COMMENT ON TYPE credits.transaction_type IS 'what a transaction is: deposit, usage, auto_recharge, grant, expiry, refund';
COMMENT ON TYPE credits.transaction_status IS 'where a transaction is: pending, completed, failed (deposits, refunds); accumulating, completed (usage)';
COMMENT ON ROLE credits_app IS 'credits: reader, plus accounts, payment methods, deposits, refund requests, resources, usage and settings';
COMMENT ON ROLE credits_worker IS 'credits: reader, plus completing and failing deposits and refunds, grants, the events outbox and the periodic runs';



-- ---------------------------------------------------------------------------------------------
-- Time is split at UTC hours in one place (src/usage_math.c, which the deduction walks too);
-- the hour that API usage counts in is decided in one place (credits._api_usage_hour), for the
-- fold and for the reads of unfolded usage.
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION credits._hour_segments(rate_per_hour credits.credits, from_ts timestamptz, upto timestamptz)
    RETURNS TABLE (usage_hour timestamptz, units numeric)
    AS 'MODULE_PATHNAME', 'credits_hour_segments' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE ROWS 2;

CREATE FUNCTION credits._api_usage_hour(project_id bigint, resource_id text, usage_hour timestamptz,
                                        at timestamptz) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'credits_api_usage_hour' LANGUAGE C STABLE STRICT PARALLEL SAFE;

CREATE OR REPLACE FUNCTION credits._fold_usage_events(at timestamptz) RETURNS bigint
    LANGUAGE sql AS $$
    WITH moved AS (
        DELETE FROM credits.usage_events RETURNING project_id, resource_id, usage_hour, amount),
    by_hour AS (
        SELECT m.project_id, m.resource_id, m.usage_hour, credits._units_sum(m.amount) AS units, count(*) AS n
          FROM moved m GROUP BY m.project_id, m.resource_id, m.usage_hour),
    targeted AS (
        SELECT b.project_id, b.resource_id, b.units, b.n,
               credits._api_usage_hour(b.project_id, b.resource_id, b.usage_hour, at) AS usage_hour
          FROM by_hour b),
    -- (a late group and the current hour's group of the same product become one row)
    grouped AS (
        SELECT project_id, resource_id, usage_hour, sum(units) AS units, sum(n) AS n
          FROM targeted GROUP BY project_id, resource_id, usage_hour),
    rolled_up AS (
        INSERT INTO credits.usage_rollup AS u (project_id, resource_id, usage_hour, units)
        SELECT g.project_id, g.resource_id, g.usage_hour, g.units FROM grouped g
        ON CONFLICT (project_id, usage_hour, resource_id) DO UPDATE SET units = u.units + excluded.units)
    -- (a data-modifying WITH runs to completion whether or not it is read)
    SELECT coalesce(sum(n), 0)::bigint FROM grouped;
$$;

CREATE OR REPLACE FUNCTION credits._unfolded_usage(project_id bigint)
    RETURNS TABLE (resource_id text, usage_hour timestamptz, units numeric)
    AS 'MODULE_PATHNAME', 'credits_unfolded_usage' LANGUAGE C STABLE STRICT PARALLEL SAFE ROWS 1;

CREATE OR REPLACE VIEW credits.usage_in_progress AS
SELECT x.project_id, max(x.transaction_id) AS transaction_id, x.resource_id, x.usage_hour,
       max(x.description) AS description, -credits._accrued_amount(sum(x.units)) AS amount
  FROM (SELECT t.project_id, t.transaction_id, t.resource_id, t.usage_hour, t.description,
               t.accrued_units AS units
          FROM credits.transactions t
         WHERE t.status = 'accumulating'
        UNION ALL
        SELECT r.project_id, NULL, r.resource_id, s.usage_hour, credits._describe(r.kind, r.resource_id), s.units
          FROM credits.resources r
          JOIN credits.accounts a ON a.project_id = r.project_id,
               LATERAL credits._hour_segments(r.rate_per_hour, greatest(r.accrued_until, a.deducted_until),
                                              credits.now()) AS s
         WHERE r.accrued_until < credits.now()
        UNION ALL
        SELECT u.project_id, NULL, u.resource_id, u.usage_hour, credits._describe('api', u.resource_id), u.units
          FROM credits.usage_rollup u
        UNION ALL
        -- (each project's events read through their index, whatever the statistics say, in
        -- the hour they count in now: where the fold will put them)
        SELECT a.project_id, NULL, e.resource_id, e.usage_hour, credits._describe('api', e.resource_id), e.units
          FROM credits.accounts a, LATERAL credits._unfolded_usage(a.project_id) AS e) AS x
 GROUP BY x.project_id, x.resource_id, x.usage_hour;

REVOKE ALL ON FUNCTION credits._api_usage_hour(bigint, text, timestamptz, timestamptz) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Spending controls read per set of projects (install sources 61_spending_controls.sql to
-- 66_spending_overview.sql, and the hook in 50_periodic.sql): the view _spending_positions
-- becomes the function _spending_positions(ids), spending_overview reads each project through
-- _spending_position_of, budget stops are set-based, and late API usage has its project's
-- totals counted again.
-- ---------------------------------------------------------------------------------------------
DROP VIEW credits.spending_overview;
DROP FUNCTION credits._act_on_spending(credits._spending_positions[]);
DROP VIEW credits._spending_positions;

-- 61_spending_controls.sql
-- The completed charges (collected and uncollected: the exact accrual) of the usage hours of
-- each watched project among ids that begin in the current UTC day and month: spending_totals,
-- plus the hours deducted since it was counted, probed hour by hour in the usage index.  (A
-- set-returning SQL function, not strict: the planner inlines it.)
CREATE OR REPLACE FUNCTION credits._completed_spending(ids bigint[])
    RETURNS TABLE (project_id bigint, day_start timestamptz, month_start timestamptz,
                   completed_today credits.credits, completed_this_month credits.credits)
    LANGUAGE sql STABLE
BEGIN ATOMIC
SELECT s.project_id, p.day_start, p.month_start,
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
 WHERE s.project_id = ANY (ids);
END;

-- Usage not yet deducted, per project with any, as of credits.now(): in total, and of it the
-- charges of the hours beginning in the current UTC day and month, and the API usage of the
-- last ended hour (the open part of the burn rate).  One grouping of credits.usage_in_progress
-- for the balance check's pass over every project (credits._due_projects) and for the position
-- of the projects given (credits._spending_positions: a filter on project_id reaches the
-- indexes).  (The hours compared with are scalar subqueries, computed once per statement
-- rather than once per row.)
CREATE VIEW credits._accrued_by_project AS
SELECT u.project_id, -credits._usage_total(u.amount) AS accumulating,
       -credits._usage_total(u.amount)
           FILTER (WHERE u.usage_hour >= (SELECT date_trunc('day', credits.now(), 'UTC'))) AS today,
       -credits._usage_total(u.amount)
           FILTER (WHERE u.usage_hour >= (SELECT date_trunc('month', credits.now(), 'UTC'))) AS this_month,
       -credits._usage_total(u.amount)
           FILTER (WHERE u.usage_hour = (SELECT credits.hour_of(credits.now()) - interval '1 hour')
                     AND NOT EXISTS (SELECT FROM credits.resources r
                                      WHERE r.project_id = u.project_id AND r.resource_id = u.resource_id)) AS api_last_hour
  FROM credits.usage_in_progress u
 GROUP BY u.project_id;

-- Whether a project's spending_totals row s counts every hour deducted before deducted_until
-- (its account's) and is of the UTC day and month beginning at day_start and month_start (the
-- current ones): then its day_spent and month_spent are what the project's completed hours
-- charged in them.
CREATE FUNCTION credits._totals_current(s credits.spending_totals, deducted_until timestamptz,
                                        day_start timestamptz, month_start timestamptz) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    RETURN coalesce(s.counted_until >= deducted_until AND s.day_start = day_start
                    AND s.month_start = month_start, false);
REVOKE ALL ON FUNCTION credits._totals_current(credits.spending_totals, timestamptz, timestamptz, timestamptz) FROM PUBLIC;

-- (64_spending_checks.sql)
-- Whether a watched project's controls c call for action at this position: an alert line
-- crossed either way since it was last announced, a budget reached and not announced in its
-- current UTC period (the day from day_start, the month from month_start), or a budget that
-- stops reached while instances run (running).  The periodic runs act
-- (credits._act_on_spending) on the projects it holds for.
CREATE FUNCTION credits._spending_due(c credits.spending_controls, available credits.credits,
                                      burn_rate credits.credits, spent_today credits.credits,
                                      spent_this_month credits.credits, day_start timestamptz,
                                      month_start timestamptz, running boolean) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    RETURN c.balance_low <> credits._below_balance(available, c.below_balance)
        OR c.runway_low <> credits._below_runway(available, burn_rate, c.below_runway)
        OR (credits._budget_hit(spent_today, c.daily_budget) AND c.daily_reached IS DISTINCT FROM day_start)
        OR (credits._budget_hit(spent_this_month, c.monthly_budget) AND c.monthly_reached IS DISTINCT FROM month_start)
        OR (c.on_budget = 'stop'
            AND (credits._budget_hit(spent_today, c.daily_budget)
                 OR credits._budget_hit(spent_this_month, c.monthly_budget))
            AND running);
REVOKE ALL ON FUNCTION credits._spending_due(credits.spending_controls, credits.credits, credits.credits, credits.credits, credits.credits, timestamptz, timestamptz, boolean) FROM PUBLIC;

-- Where each watched project among ids stands now (credits.now()): its balance, usage accrued
-- and not yet deducted, available balance, burn rate (as balance_overview counts it), and the
-- charges (collected and uncollected: the exact accrual) of usage hours beginning in the
-- current UTC day and month: the completed ones (completed_*: spending_totals plus the hours
-- deducted since it was counted, probed hour by hour in the usage index) and the accumulating
-- ones.  ids reaches every part as project_id = ANY (ids), so one project (ARRAY[p]) is read
-- through its indexes, and the periodic runs read the watched projects only, each part once
-- for all of them.  (A set-returning SQL function, not strict: the planner inlines it.)
CREATE OR REPLACE FUNCTION credits._spending_positions(ids bigint[])
    RETURNS TABLE (project_id bigint, balance credits.credits, accumulating credits.credits,
                   available_balance credits.credits, burn_rate credits.credits,
                   spent_today credits.credits, spent_this_month credits.credits,
                   day_start timestamptz, month_start timestamptz, deducted_until timestamptz,
                   completed_today credits.credits, completed_this_month credits.credits,
                   lots_alike boolean)
    LANGUAGE sql STABLE
BEGIN ATOMIC
SELECT c.project_id, a.balance,
       coalesce(ip.accumulating, '0'::credits.credits) AS accumulating,
       -- (as balance_overview: the lots' rule when they are not all alike)
       CASE WHEN lk.alike THEN credits._available(a.balance, ip.accumulating)
            ELSE credits._lots_available(c.project_id) END AS available_balance,
       -- (the two parts added as the burn-rate aggregate adds, clamped to the type's range)
       credits._burn_rate_combine(coalesce(br.burn_rate, '0'::credits.credits),
                                  coalesce(ip.api_last_hour, '0'::credits.credits)) AS burn_rate,
       cc.completed_today + coalesce(ip.today, '0'::credits.credits) AS spent_today,
       cc.completed_this_month + coalesce(ip.this_month, '0'::credits.credits) AS spent_this_month,
       cc.day_start, cc.month_start, a.deducted_until, cc.completed_today, cc.completed_this_month,
       lk.alike AS lots_alike
  FROM credits.spending_controls c
  JOIN credits.accounts a ON a.project_id = c.project_id
  CROSS JOIN LATERAL (
      SELECT NOT EXISTS (SELECT FROM credits.credit_lots l
                          WHERE l.project_id = c.project_id AND l.active
                            AND (l.expires_at IS NOT NULL OR l.applies_to IS NOT NULL
                                 OR l.held > '0'::credits.credits)) AS alike) AS lk
  JOIN credits._completed_spending(ids) AS cc ON cc.project_id = c.project_id
  LEFT JOIN (SELECT x.* FROM credits._accrued_by_project x WHERE x.project_id = ANY (ids)) AS ip
         ON ip.project_id = c.project_id
  -- (the rest of credits._burn_rate_inputs: the rates, and the deducted API usage of the last
  -- ended hour)
  LEFT JOIN (SELECT b.project_id, credits.burn_rate(b.amount, interval '1 hour') AS burn_rate
               FROM (SELECT r.project_id, r.rate_per_hour AS amount
                       FROM credits.resources r
                      WHERE r.state IN ('running', 'available') AND r.project_id = ANY (ids)
                     UNION ALL
                     SELECT t.project_id, t.uncollected - t.amount
                       FROM credits.transactions t
                      WHERE t.type = 'usage' AND t.status = 'completed' AND t.project_id = ANY (ids)
                        AND t.usage_hour = credits.hour_of(credits.now()) - interval '1 hour'
                        AND NOT EXISTS (SELECT FROM credits.resources r
                                         WHERE r.project_id = t.project_id AND r.resource_id = t.resource_id)) AS b
              GROUP BY b.project_id) AS br ON br.project_id = c.project_id
 WHERE c.project_id = ANY (ids);
END;

-- The watched projects' ids, in order: what the periodic runs pass to _spending_positions.
CREATE OR REPLACE FUNCTION credits._watched_projects() RETURNS bigint[]
    LANGUAGE sql STABLE
    RETURN ARRAY(SELECT c.project_id FROM credits.spending_controls c ORDER BY c.project_id);

-- Has every project whose usage_rollup holds API usage for an hour its spending_totals already
-- counted counted again from the start of the month.  (A call that committed after its hour
-- was deducted, for a product with no usage in that hour, is charged in that hour: the next
-- deduction completes an hour the totals had passed.  Rare; a recount reads the project's
-- month once.)  Called after the fold and before the deduction, and by _count_spending.
CREATE OR REPLACE FUNCTION credits._recount_late_usage() RETURNS void
    LANGUAGE sql AS $$
    UPDATE credits.spending_totals s SET counted_until = '-infinity', day_start = NULL, month_start = NULL
     WHERE s.project_id IN (SELECT u.project_id FROM credits.usage_rollup u
                              JOIN credits.spending_totals t ON t.project_id = u.project_id
                             WHERE u.usage_hour < t.counted_until);
$$;

-- Brings spending_totals up to each watched project's deducted hours and to the current UTC
-- day and month: only the rows not current (credits._totals_current) are counted again and
-- rewritten.  Their ids are written into the statement as a constant, so that each scan tests
-- them through a hash (as a parameter an array is searched element by element, for every row).
-- Called by the periodic runs, which hold the periodic-run lock; rows locked by another
-- transaction are left for the next run.
CREATE OR REPLACE FUNCTION credits._count_spending() RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    stale bigint[];
BEGIN
    PERFORM credits._recount_late_usage();
    stale := ARRAY(SELECT s.project_id FROM credits.spending_totals s
                     JOIN credits.accounts a ON a.project_id = s.project_id
                    WHERE NOT credits._totals_current(s, a.deducted_until,
                                                      (SELECT date_trunc('day', credits.now(), 'UTC')),
                                                      (SELECT date_trunc('month', credits.now(), 'UTC')))
                    ORDER BY s.project_id);
    IF cardinality(stale) = 0 THEN
        RETURN;
    END IF;
    EXECUTE format($count$
    WITH due AS (
        SELECT p.project_id, a.deducted_until, p.day_start, p.month_start,
               p.completed_today, p.completed_this_month
          FROM credits._completed_spending(%L::bigint[]) p
          JOIN credits.accounts a ON a.project_id = p.project_id),
    locked AS (
        SELECT s.project_id FROM credits.spending_totals s
         WHERE s.project_id IN (SELECT d.project_id FROM due d)
         ORDER BY s.project_id FOR UPDATE SKIP LOCKED)
    UPDATE credits.spending_totals s
       SET counted_until = d.deducted_until, day_start = d.day_start, day_spent = d.completed_today,
           month_start = d.month_start, month_spent = d.completed_this_month
      FROM due d
     WHERE s.project_id = d.project_id AND s.project_id IN (SELECT l.project_id FROM locked l)
    $count$, stale);
END $$;


-- 62_limits.sql
-- Raises 22023 unless value is null (off) or a positive interval.
CREATE OR REPLACE FUNCTION credits._require_positive_interval(arg_name text, value interval) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF value IS NOT NULL AND extract(epoch FROM value) <= 0 THEN
        RAISE EXCEPTION '% must be a positive interval, got %', arg_name, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- Raises 22023 unless amount is null (off) or positive (at most one billion credits).
CREATE OR REPLACE FUNCTION credits._require_positive_or_null(arg_name text, amount credits.credits) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF amount IS NOT NULL THEN
        PERFORM credits._require_positive(arg_name, amount);
    END IF;
END $$;

-- Saves the project's spending controls row (creating it and its totals row), or removes
-- both when neither limits nor alerts are left.  The caller holds the account's lock.
CREATE OR REPLACE FUNCTION credits._save_spending_controls(project_id bigint, c credits.spending_controls) RETURNS void
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
CREATE OR REPLACE FUNCTION credits.configure_limits(project_id bigint, max_burn_rate credits.credits DEFAULT NULL,
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
COMMENT ON FUNCTION credits.configure_limits(bigint, credits.credits, interval, credits.credits, credits.credits, text) IS
    'Sets a project''s spending limits, the whole configuration at once (null: off): max_burn_rate and '
    'min_runway refuse starts (55000); daily_budget and monthly_budget queue budget_reached once per UTC '
    'period, and with on_budget ''stop'' also stop running instances and refuse starts until the period '
    'ends or the budget is raised.';

-- 63_alerts.sql
-- Sets the project's alert lines; each call states the whole configuration (null: off).
-- Saving them keeps what was announced: a line still crossed is not announced again.
CREATE OR REPLACE FUNCTION credits.configure_alerts(project_id bigint, below_balance credits.credits DEFAULT NULL,
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
-- The alert and budget lines, each written once.
CREATE OR REPLACE FUNCTION credits._below_balance(available credits.credits, below_balance credits.credits) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN coalesce(available < below_balance, false);

-- hours_remaining (available / burn_rate) below below_runway; never with a zero burn rate.
CREATE OR REPLACE FUNCTION credits._below_runway(available credits.credits, burn_rate credits.credits,
                                      below_runway interval) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN coalesce(burn_rate > '0'::credits.credits
                    AND available::numeric * 3600 < burn_rate::numeric * extract(epoch FROM below_runway), false);

CREATE OR REPLACE FUNCTION credits._budget_hit(spent credits.credits, budget credits.credits) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN coalesce(spent >= budget, false);

-- hours_remaining as balance_overview shows it (null when nothing burns).
CREATE OR REPLACE FUNCTION credits._hours_remaining(available credits.credits, burn_rate credits.credits) RETURNS numeric
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN burn_rate > '0'::credits.credits THEN round(available / burn_rate, 2) END;

-- Stops, at time at, the running instances of the projects given (each with the budget that
-- stopped it), in three statements for all of them: their time is booked up to at as
-- stop_instance books it (credits._book_usage, here for many resources at once), they become
-- stopped, and instance_stopped is queued for each.  (Per instance, each booking's statement
-- cost as much as reading every account.)  The caller holds the projects' accounts.
CREATE OR REPLACE FUNCTION credits._stop_for_budget(project_ids bigint[], budgets text[], at timestamptz)
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
-- balance is read again under the account's lock (when the project's lots are all alike).
-- Returns the projects acted on.
CREATE OR REPLACE FUNCTION credits._act_on_spending(ids bigint[]) RETURNS bigint[]
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
          -- (the balance as locked; lots that are not all alike as the positions read them)
          CROSS JOIN LATERAL (SELECT CASE WHEN p.lots_alike THEN credits._available(l.balance, p.accumulating)
                                          ELSE p.available_balance END AS available) AS v),
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
CREATE OR REPLACE FUNCTION credits._check_spending(project_id bigint) RETURNS void
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
CREATE OR REPLACE FUNCTION credits._watch_spending(at timestamptz) RETURNS bigint[]
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
-- The superuser-only setting credits.volume_retention as an interval (null when empty).
CREATE OR REPLACE FUNCTION credits.volume_retention() RETURNS interval
    AS 'MODULE_PATHNAME', 'credits_volume_retention_interval' LANGUAGE C STABLE PARALLEL SAFE;

-- What the cut-off adds to the event of a resource it makes inaccessible at time at: the
-- volume's deletes_at when volumes are deleted (credits._cut_off).
CREATE OR REPLACE FUNCTION credits._retention_payload(kind text, at timestamptz) RETURNS jsonb
    LANGUAGE sql STABLE
    RETURN CASE WHEN kind = 'volume' AND credits.volume_retention() IS NOT NULL
                THEN jsonb_build_object('deletes_at', at + credits.volume_retention())
                ELSE '{}'::jsonb END;

-- Deletes the volumes inaccessible for credits.volume_retention whose warning an earlier run
-- queued, then warns about those with less than 24 hours left, set-based, each with its
-- event.  Volumes locked by another transaction (a deposit restoring them) are left for the
-- next run.  Returns the projects acted on.  The caller holds the periodic-run lock.
CREATE OR REPLACE FUNCTION credits._enforce_volume_retention(at timestamptz) RETURNS bigint[]
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
-- One watched project's position, for the view below.  SECURITY DEFINER: readers may not read
-- the tables (a view's own relations are read with its owner's rights, a function's with the
-- caller's).
CREATE OR REPLACE FUNCTION credits._spending_position_of(project_id bigint)
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

-- The hooks in the periodic runs.
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
    PERFORM credits._expire_lots(cur, at);
    -- (the accrued usage of every project is worth computing only when one may recharge)
    IF EXISTS (SELECT FROM credits.auto_recharge r WHERE r.enabled AND r.armed) THEN
        SELECT * INTO due FROM credits._due_projects();
        PERFORM credits._start_auto_recharges(due.recharge_ids, due.recharge_accrued);
    END IF;
    PERFORM credits._watch_spending(at);    -- spending controls (64_spending_checks.sql)
    RETURN completed;
END $$;

-- Privileges, as 90_roles.sql gives them.
REVOKE ALL ON FUNCTION credits._spending_positions(bigint[]), credits._completed_spending(bigint[]),
    credits._watched_projects(),
    credits._recount_late_usage(), credits._stop_for_budget(bigint[], text[], timestamptz),
    credits._act_on_spending(bigint[]), credits._spending_position_of(bigint) FROM PUBLIC;
GRANT SELECT ON credits.spending_overview TO credits_reader;
GRANT EXECUTE ON FUNCTION credits._spending_position_of(bigint) TO credits_reader;

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
ALTER TABLE credits.events ADD CONSTRAINT events_kind_check CHECK (kind IN ('charge_requested',
                       'instance_terminated', 'volume_inaccessible', 'volume_available', 'balance_depleted',
                       -- spending controls and volume retention (sql/install/6x_*.sql)
                       'budget_reached', 'instance_stopped', 'balance_low', 'runway_low',
                       'balance_recovered', 'volume_deletion_warning', 'volume_deleted',
                       -- refunds (sql/install/36_refunds.sql)
                       'refund_requested',
                       -- a project's periodic work failed (sql/install/50_periodic.sql)
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

-- Whether usage accrued and not yet deducted (accrued) has used up a balance: the one rule of
-- every cut-off, by the balance check and by the zero-balance trigger.
CREATE FUNCTION credits._used_up(balance credits.credits, accrued credits.credits) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN balance <= accrued;
REVOKE ALL ON FUNCTION credits._used_up(credits.credits, credits.credits) FROM PUBLIC;

-- Cuts a project's resources of the kinds given off at time at: books every billing one's time up
-- to at, terminates instances, locks volumes, queues the events.  A resource locked by another
-- transaction raises 55P03 at once rather than wait: the periodic runs pass the project over
-- and cut it off at a later run (the paths that change resources lock the account first, so
-- this is rare).
CREATE OR REPLACE FUNCTION credits._cut_off_resources(project_id bigint, kinds text[], at timestamptz) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    r credits.resources;
BEGIN
    FOR r IN SELECT * FROM credits.resources x
              WHERE x.project_id = _cut_off_resources.project_id AND x.state IN ('running', 'available')
                AND x.kind = ANY (kinds)
              ORDER BY x.resource_id FOR UPDATE NOWAIT
    LOOP
        PERFORM credits._book_usage(project_id, r.kind, r.resource_id, r.rate_per_hour, r.accrued_until, at);
        UPDATE credits.resources x
           SET state = CASE r.kind WHEN 'instance' THEN 'terminated' ELSE 'inaccessible' END,
               state_since = at, accrued_until = NULL
         WHERE x.project_id = _cut_off_resources.project_id AND x.resource_id = r.resource_id;
        PERFORM credits._enqueue_event(project_id,
            CASE r.kind WHEN 'instance' THEN 'instance_terminated' ELSE 'volume_inaccessible' END,
            r.resource_id, NULL,
            jsonb_build_object('resource_id', r.resource_id, 'kind', r.kind, 'at', at)
                || credits._retention_payload(r.kind, at));
    END LOOP;
END $$;

DROP FUNCTION credits._due_projects();
-- The projects a periodic run may have to act on, found in one pass over the accounts with
-- their usage accrued and not yet deducted (the costly part, computed once per run): those
-- not cut off whose accrued usage has used up the balance, and those whose armed auto-recharge
-- finds the available balance below its threshold, each list with the accrued usage of its
-- projects; those whose lots are not all alike that may have to be judged kind by kind (also
-- with nothing accruing: nothing may be left for their instances and volumes); and the watched
-- projects whose spending controls call for action (credits._spending_due), from the same
-- accrued usage, their spending_totals (a row not current counts as due:
-- credits._act_on_spending reads the project's position again) and their rates.  Lists in
-- project order.  (BEGIN ATOMIC: bound at install time, whatever the caller's search_path.
-- The planner expects 1000 hour segments per resource and 200 projects, so left alone it
-- nested-loops 100,000 index probes into accounts and sizes a hash table for millions of
-- groups; sorting in memory and no nested loops take a third of the time at 100,000 projects.)
CREATE FUNCTION credits._due_projects(OUT used_up_ids bigint[], OUT used_up_accrued credits.credits[],
                                      OUT recharge_ids bigint[], OUT recharge_accrued credits.credits[],
                                      OUT special_ids bigint[], OUT spending_ids bigint[])
    LANGUAGE sql STABLE
    SET work_mem = '64MB' SET enable_hashagg = off SET enable_nestloop = off
BEGIN ATOMIC
    WITH positions AS (
        SELECT a.project_id, a.balance, a.depleted, a.deducted_until, u.accumulating,
               coalesce(u.accumulating, '0'::credits.credits) AS accrued,
               coalesce(r.enabled AND r.armed, false) AS recharging, r.threshold,
               s.project_id IS NOT NULL AS special, s.for_instances, s.for_volumes,
               u.today, u.this_month, u.api_last_hour
          FROM credits.accounts a
          LEFT JOIN credits._accrued_by_project u ON u.project_id = a.project_id
          LEFT JOIN credits.auto_recharge r ON r.project_id = a.project_id
          LEFT JOIN (SELECT l.project_id,
                            coalesce(sum(l.remaining - l.held)
                                         FILTER (WHERE (credits._kind_mask(l.applies_to) & 1) <> 0
                                                   AND (l.expires_at IS NULL OR l.expires_at > credits.hour_of(credits.now()))),
                                     '0'::credits.credits) AS for_instances,
                            coalesce(sum(l.remaining - l.held)
                                         FILTER (WHERE (credits._kind_mask(l.applies_to) & 2) <> 0
                                                   AND (l.expires_at IS NULL OR l.expires_at > credits.hour_of(credits.now()))),
                                     '0'::credits.credits) AS for_volumes
                       FROM credits.credit_lots l
                      WHERE l.active AND l.project_id IN (SELECT x FROM credits._special_projects() AS x)
                      GROUP BY l.project_id) AS s ON s.project_id = a.project_id
         WHERE u.project_id IS NOT NULL OR (r.enabled AND r.armed) OR s.project_id IS NOT NULL
            OR a.project_id IN (SELECT c.project_id FROM credits.spending_controls c)),
    -- (each watched project's controls, spending totals and the rest of its burn rate, as
    -- credits._spending_positions reads it: the rates, and the deducted API usage of the last
    -- ended hour)
    watched AS (
        SELECT c.project_id, c AS controls, t AS totals, br.burn_rate
          FROM credits.spending_controls c
          JOIN credits.spending_totals t ON t.project_id = c.project_id
          LEFT JOIN (SELECT b.project_id, credits.burn_rate(b.amount, interval '1 hour') AS burn_rate
                       FROM (SELECT r.project_id, r.rate_per_hour AS amount
                               FROM credits.resources r
                              WHERE r.state IN ('running', 'available')
                                AND r.project_id IN (SELECT c.project_id FROM credits.spending_controls c)
                             UNION ALL
                             SELECT t.project_id, t.uncollected - t.amount
                               FROM credits.transactions t
                              WHERE t.type = 'usage' AND t.status = 'completed'
                                AND t.usage_hour = credits.hour_of(credits.now()) - interval '1 hour'
                                AND t.project_id IN (SELECT c.project_id FROM credits.spending_controls c)
                                AND NOT EXISTS (SELECT FROM credits.resources r
                                                 WHERE r.project_id = t.project_id AND r.resource_id = t.resource_id)) AS b
                      GROUP BY b.project_id) AS br ON br.project_id = c.project_id),
    -- (a project whose lots are not all alike: what it can spend is what its lots have left,
    -- given as the accrued usage that leaves that much of the balance; credits._enforce_lots
    -- judges its cut-off)
    standing AS (
        SELECT p.*,
               CASE WHEN p.special AND p.recharging
                    THEN p.balance - credits._spendable(p.project_id, 7, credits.now())
                    ELSE p.accrued END AS effective_accrued
          FROM positions p),
    -- (OFFSET 0: kept a subquery, so that the watched projects' positions reach
    -- credits._spending_due as its columns and it is inlined; with the expressions in their
    -- place it would be called once per project, at 25,000 projects 0.4 s)
    flagged AS (
        SELECT p.project_id, p.effective_accrued AS accrued,
               -- (a project with no usage accruing has used nothing up: one at zero that was
               -- never funded is not cut off for having auto-recharge configured)
               p.accumulating IS NOT NULL AND NOT p.special AND NOT p.depleted
                 AND credits._used_up(p.balance, p.accumulating) AS used_up,
               p.recharging AND credits._available(p.balance, p.effective_accrued) < p.threshold AS recharge,
               -- (its lots for a kind cannot all be left over when the accrued usage, whatever
               -- its kind, is at least what they hold)
               p.special AND (p.depleted OR p.for_instances <= p.accrued OR p.for_volumes <= p.accrued) AS judge,
               -- (a watched project's controls and position, nulls for the others; the current
               -- UTC day and month as scalar subqueries, computed once)
               (SELECT date_trunc('day', credits.now(), 'UTC')) AS day_start,
               (SELECT date_trunc('month', credits.now(), 'UTC')) AS month_start,
               w.project_id IS NOT NULL AS watched, w.controls, w.totals, p.deducted_until,
               -- (as balance_overview: the lots' rule when they are not all alike)
               CASE WHEN w.project_id IS NULL THEN NULL
                    WHEN p.special THEN credits._lots_available(p.project_id)
                    ELSE credits._available(p.balance, p.accumulating) END AS available,
               credits._burn_rate_combine(coalesce(w.burn_rate, '0'::credits.credits),
                                          coalesce(p.api_last_hour, '0'::credits.credits)) AS burn_rate,
               (w.totals).day_spent + coalesce(p.today, '0'::credits.credits) AS spent_today,
               (w.totals).month_spent + coalesce(p.this_month, '0'::credits.credits) AS spent_this_month
          FROM standing p
          LEFT JOIN watched w ON w.project_id = p.project_id
        OFFSET 0)
    SELECT coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.used_up), '{}'),
           coalesce(array_agg(f.accrued ORDER BY f.project_id) FILTER (WHERE f.used_up), '{}'),
           coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.recharge), '{}'),
           coalesce(array_agg(f.accrued ORDER BY f.project_id) FILTER (WHERE f.recharge), '{}'),
           coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.judge), '{}'),
           -- (a spending_totals row not current: credits._act_on_spending counts the project's
           -- position itself)
           coalesce(array_agg(f.project_id ORDER BY f.project_id)
                        FILTER (WHERE f.watched
                                  AND (NOT credits._totals_current(f.totals, f.deducted_until, f.day_start, f.month_start)
                                       OR credits._spending_due(f.controls, f.available, f.burn_rate,
                                                                f.spent_today, f.spent_this_month,
                                                                f.day_start, f.month_start,
                                                                EXISTS (SELECT FROM credits.resources x
                                                                         WHERE x.project_id = f.project_id
                                                                           AND x.kind = 'instance'
                                                                           AND x.state = 'running')))), '{}')
      FROM flagged f;
END;
REVOKE ALL ON FUNCTION credits._due_projects() FROM PUBLIC;

-- The balance checks' work for the projects given, at time at: the projects of special_ids
-- (their lots not all alike) judged kind by kind (credits._enforce_lots); those of
-- used_up_ids (with their accrued usage, used_up_accrued) cut off one by one in project order
-- if their accrued usage has used up the balance (tested again on the locked row: a deposit
-- may have committed since); then the auto-recharges due among recharge_ids requested
-- (credits._start_auto_recharges).  An account locked by another transaction is passed over
-- (skipped) and left for a later run.  Returns the projects acted on and those skipped.
CREATE FUNCTION credits._cut_off_and_recharge(at timestamptz, used_up_ids bigint[], used_up_accrued credits.credits[],
                                              recharge_ids bigint[], recharge_accrued credits.credits[],
                                              special_ids bigint[], OUT acted bigint[], OUT skipped bigint[])
    LANGUAGE plpgsql AS $$
DECLARE
    c record;
    p bigint;
    locked bigint[] := '{}';
    cut_off bigint[] := '{}';
BEGIN
    skipped := '{}';
    FOREACH p IN ARRAY special_ids LOOP
        PERFORM FROM credits.accounts a WHERE a.project_id = p FOR NO KEY UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            skipped := skipped || p;
        ELSIF credits._enforce_lots(p, at) THEN
            cut_off := cut_off || p;
        END IF;
    END LOOP;
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
    skipped := skipped || ARRAY(
        SELECT u.project_id FROM unnest(used_up_ids) AS u(project_id)
         WHERE NOT EXISTS (SELECT FROM unnest(locked) AS l(project_id) WHERE l.project_id = u.project_id)
           AND NOT EXISTS (SELECT FROM credits.accounts a WHERE a.project_id = u.project_id AND a.depleted));
    acted := ARRAY(SELECT unnest(cut_off) UNION SELECT unnest(credits._start_auto_recharges(recharge_ids, recharge_accrued)));
END $$;

REVOKE ALL ON FUNCTION credits._cut_off_and_recharge(timestamptz, bigint[], credits.credits[], bigint[], credits.credits[], bigint[]) FROM PUBLIC;

-- credits._cut_off_and_recharge for all the projects given at once; when that fails (one
-- project's work raised, and with it the batch), project by project, each in a subtransaction
-- of its own: a project whose work raises is recorded in credits.billing_errors as a failure of
-- run and skipped.  (A lock that cannot be had at once, 55P03, only passes it over.)  Returns
-- the projects acted on, those that failed and those passed over.
CREATE FUNCTION credits._act_on_balances(run text, at timestamptz, used_up_ids bigint[], used_up_accrued credits.credits[],
                                         recharge_ids bigint[], recharge_accrued credits.credits[],
                                         special_ids bigint[],
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
        SELECT * INTO one
          FROM credits._cut_off_and_recharge(at, used_up_ids, used_up_accrued, recharge_ids, recharge_accrued, special_ids);
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
    FOR c IN SELECT project_id, u.accrued AS used_up, r.accrued AS recharge, s.project_id IS NOT NULL AS special
               FROM unnest(used_up_ids, used_up_accrued) AS u(project_id, accrued)
               FULL JOIN unnest(recharge_ids, recharge_accrued) AS r(project_id, accrued) USING (project_id)
               FULL JOIN unnest(special_ids) AS s(project_id) USING (project_id)
              ORDER BY project_id
    LOOP
        BEGIN
            SELECT * INTO one FROM credits._cut_off_and_recharge(at,
                CASE WHEN c.used_up IS NULL THEN '{}' ELSE ARRAY[c.project_id] END,
                CASE WHEN c.used_up IS NULL THEN '{}' ELSE ARRAY[c.used_up] END,
                CASE WHEN c.recharge IS NULL THEN '{}' ELSE ARRAY[c.project_id] END,
                CASE WHEN c.recharge IS NULL THEN '{}' ELSE ARRAY[c.recharge] END,
                CASE WHEN c.special THEN ARRAY[c.project_id] ELSE '{}' END);
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

REVOKE ALL ON FUNCTION credits._act_on_balances(text, timestamptz, bigint[], credits.credits[], bigint[], credits.credits[], bigint[]) FROM PUBLIC;

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
    PERFORM credits._recount_late_usage();    -- spending totals (61_spending_controls.sql)
    PERFORM credits._unsum_late_usage();      -- usage summaries (61_usage_days.sql)
    SELECT * INTO deducted FROM credits._deduct_isolated(cur, at);
    PERFORM credits._expire_lots(cur, at);
    -- (the accrued usage of every project is worth computing only when one may recharge)
    IF EXISTS (SELECT FROM credits.auto_recharge r WHERE r.enabled AND r.armed) THEN
        SELECT * INTO due FROM credits._due_projects();
        SELECT a.failed INTO recharge_failed
          FROM credits._act_on_balances('run_hourly_deductions', at, '{}', '{}', due.recharge_ids,
                                        due.recharge_accrued, '{}') AS a;
    END IF;
    PERFORM credits._watch_spending(at);    -- spending controls (64_spending_checks.sql)
    -- (billed again: deducted up to cur, and nothing failed for it in this run)
    DELETE FROM credits.billing_failures f USING credits.accounts a
     WHERE f.run = 'run_hourly_deductions' AND a.project_id = f.project_id AND a.deducted_until >= cur
       AND f.project_id <> ALL (deducted.failed || recharge_failed);
    RETURN deducted.completed;
END $$;

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
    watched bigint[];
    controlled bigint[] := '{}';
BEGIN
    PERFORM credits._lock_periodic_runs();
    at := credits.now();
    PERFORM credits._fold_usage_events(at);
    PERFORM credits._expire_lots(credits.hour_of(at), at);
    -- (the spending totals brought up to the deducted hours: the pass reads them)
    PERFORM credits._count_spending();
    -- Every list from one computation of the accrued usage (the cut-off books live usage into
    -- usage transactions, which leaves each project's total as it was).
    SELECT * INTO due FROM credits._due_projects();
    SELECT * INTO done
      FROM credits._act_on_balances('run_balance_checks', at, due.used_up_ids, due.used_up_accrued,
                                    due.recharge_ids, due.recharge_accrued, due.special_ids);
    -- (billed again: checked in this run without failing)
    DELETE FROM credits.billing_failures f
     WHERE f.run = 'run_balance_checks' AND f.project_id <> ALL (done.failed || done.skipped);
    -- Spending controls (64_spending_checks.sql): the watched projects the pass found due, and
    -- those just cut off or recharged (their position moved since the pass), acted on with their
    -- positions read again.  Then volume retention (65_volume_retention.sql).
    watched := ARRAY(SELECT unnest(due.spending_ids)
                     UNION
                     SELECT x FROM unnest(done.acted) AS x
                      WHERE EXISTS (SELECT FROM credits.spending_controls c WHERE c.project_id = x)
                     ORDER BY 1);
    IF cardinality(watched) > 0 THEN
        controlled := credits._act_on_spending(watched);
    END IF;
    controlled := controlled || credits._enforce_volume_retention(at);
    RETURN (SELECT count(*) FROM (SELECT unnest(done.acted) UNION SELECT unnest(controlled)) AS acted);
END $$;

-- ---------------------------------------------------------------------------------------------
-- limits: a start reads its project's spending position with a generic plan.
-- ---------------------------------------------------------------------------------------------
-- Refuses (55000) a start, attach or rate change of project_id's resource to rate_per_hour
-- (old_rate: its rate while it is billing, else null) that breaks a spending limit: the rates
-- of running instances and accessible volumes above max_burn_rate; an available balance that
-- does not cover the new burn rate for min_runway; an instance start while a budget with
-- on_budget 'stop' is reached.  A change that lowers the rate is never refused.  Called by
-- credits._activate after it locked the account, before it writes anything; it locks the
-- project's controls row, so that concurrent starts of one project check one after the other,
-- each seeing what the one before started.  Under on_budget 'alert' a start that finds a
-- budget reached queues its budget_reached event.  (Generic plans: the position of one project
-- is read through its indexes whatever the project, and planning it for every start cost
-- more than reading it.)
CREATE OR REPLACE FUNCTION credits._check_start_limits(project_id bigint, resource_id text, kind text,
                                            rate_per_hour credits.credits, old_rate credits.credits)
    RETURNS void LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
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

-- ---------------------------------------------------------------------------------------------
-- limits: the periodic check writes the watched projects into its statements as a constant
-- (tested through a hash in every scan), and acts on its candidates with custom plans.
-- ---------------------------------------------------------------------------------------------
-- Acts on the watched projects among ids: queues the events their controls call for, records
-- them, and stops the running instances of projects over a budget with on_budget 'stop'.  The
-- balance is read again under the account's lock (when the project's lots are all alike).
-- Returns the projects acted on.  (Custom plans: ids is then a constant, which every scan tests
-- through a hash; a generic plan searches it element by element for every row.)
CREATE OR REPLACE FUNCTION credits._act_on_spending(ids bigint[]) RETURNS bigint[]
    LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan AS $$
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
          -- (the balance as locked; lots that are not all alike as the positions read them)
          CROSS JOIN LATERAL (SELECT CASE WHEN p.lots_alike THEN credits._available(l.balance, p.accumulating)
                                          ELSE p.available_balance END AS available) AS v),
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

-- Checks every watched project, set-based: counts the hours deducted since the last run,
-- computes every watched project's position once, and acts on those where something is due
-- (credits._spending_due).  Returns the projects acted on.  The caller holds the periodic-run
-- lock.  (The balance check finds its candidates in its pass over every project,
-- credits._due_projects; the hourly deduction calls this.  enable_nestloop = off: the planner
-- expects a few hundred watched projects and loops over each part once per project,
-- recomputing it: at 20,000 projects 10 s instead of 0.1 s.  The per-project probes are lateral
-- and stay loops.)
CREATE OR REPLACE FUNCTION credits._watch_spending(at timestamptz) RETURNS bigint[]
    LANGUAGE plpgsql SET enable_nestloop = off AS $$
DECLARE
    due bigint[];
BEGIN
    IF NOT EXISTS (SELECT FROM credits.spending_controls) THEN
        RETURN '{}';
    END IF;
    PERFORM credits._count_spending();
    -- (the ids as a constant: see credits._count_spending)
    EXECUTE format($due$
    SELECT array_agg(p.project_id ORDER BY p.project_id)
      FROM credits._spending_positions(%L::bigint[]) p
      JOIN credits.spending_controls c ON c.project_id = p.project_id
     WHERE credits._spending_due(c, p.available_balance, p.burn_rate, p.spent_today, p.spent_this_month,
                                 p.day_start, p.month_start,
                                 EXISTS (SELECT FROM credits.resources r
                                          WHERE r.project_id = p.project_id AND r.kind = 'instance'
                                            AND r.state = 'running'))
    $due$, credits._watched_projects()) INTO due;
    IF due IS NULL THEN
        RETURN '{}';
    END IF;
    RETURN credits._act_on_spending(due);
END $$;
-- balance_overview groups the accrued usage and the burn rate once per project
-- (credits._usage_by_project): a read of one project stays small whatever the statistics say.
-- ---------------------------------------------------------------------------------------------
CREATE VIEW credits._usage_by_project AS
SELECT x.project_id,
       coalesce(-credits._usage_total(x.amount) FILTER (WHERE x.accrued), '0'::credits.credits) AS accumulating,
       coalesce(credits.burn_rate(x.amount, interval '1 hour') FILTER (WHERE NOT x.accrued),
                '0'::credits.credits) AS burn_rate
  FROM (SELECT u.project_id, true AS accrued, u.amount FROM credits.usage_in_progress u
        UNION ALL
        SELECT b.project_id, false, b.amount FROM credits._burn_rate_inputs b) AS x
 GROUP BY x.project_id;

CREATE OR REPLACE VIEW credits.balance_overview AS
SELECT a.project_id,
       a.balance AS current_balance,
       v.accumulating,
       v.available_balance,
       v.burn_rate,
       CASE WHEN v.burn_rate > '0'::credits.credits
            THEN round(v.available_balance / v.burn_rate, 2) END AS hours_remaining,
       CASE WHEN v.burn_rate > '0'::credits.credits
            THEN date_trunc('second', credits.now() + (v.available_balance / v.burn_rate) * interval '1 hour')
       END AS runs_out_at,
       coalesce(r.enabled, false) AS auto_recharge_enabled
  FROM credits.accounts a
  LEFT JOIN credits.auto_recharge r ON r.project_id = a.project_id
  LEFT JOIN credits._usage_by_project u ON u.project_id = a.project_id
  CROSS JOIN LATERAL (
      SELECT coalesce(u.accumulating, '0'::credits.credits) AS accumulating,
             -- (what the lots have left after the accrued usage, as credits.available_balance();
             -- when they are all alike that is the balance less the accrued usage)
             CASE WHEN NOT EXISTS (SELECT FROM credits.credit_lots l
                                    WHERE l.project_id = a.project_id AND l.active
                                      AND (l.expires_at IS NOT NULL OR l.applies_to IS NOT NULL
                                           OR l.held > '0'::credits.credits))
                  THEN credits._available(a.balance, u.accumulating)
                  ELSE credits._lots_available(a.project_id)
             END AS available_balance,
             coalesce(u.burn_rate, '0'::credits.credits) AS burn_rate) AS v;

DROP VIEW credits._burn_rate_by_project;
-- Idempotency keys of grants and refunds reused with other arguments: one refusal
-- (credits._key_reused).
-- ---------------------------------------------------------------------------------------------
-- Raises 23505: idempotency_key names the earlier transaction, made with other arguments.
CREATE FUNCTION credits._key_reused(idempotency_key text, earlier credits.transactions) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'idempotency key "%" was already used with other arguments', idempotency_key
        USING ERRCODE = 'unique_violation',
              DETAIL = format('Transaction %s is a %s of %s.', earlier.transaction_id, earlier.type, earlier.amount);
END $$;
-- The grant an earlier grant_credits made with this idempotency key, if any; raises when that
-- call had other arguments.
CREATE OR REPLACE FUNCTION credits._grant_by_key(project_id bigint, amount credits.credits, expires_at timestamptz,
                                      priority integer, applies_to text[], idempotency_key text) RETURNS bigint
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    earlier credits.transactions;
    lot credits.credit_lots;
BEGIN
    SELECT * INTO earlier FROM credits.transactions t
     WHERE t.project_id = _grant_by_key.project_id AND t.idempotency_key = _grant_by_key.idempotency_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO lot FROM credits.credit_lots l WHERE l.transaction_id = earlier.transaction_id;
    IF earlier.type::text <> 'grant' OR earlier.amount <> amount
       OR lot.expires_at IS DISTINCT FROM _grant_by_key.expires_at OR lot.priority <> _grant_by_key.priority
       OR lot.applies_to IS DISTINCT FROM _grant_by_key.applies_to THEN
        PERFORM credits._key_reused(idempotency_key, earlier);
    END IF;
    RETURN earlier.transaction_id;
END $$;
-- The refund an earlier refund_deposit made with this idempotency key, if any; raises when that
-- call had other arguments.
CREATE OR REPLACE FUNCTION credits._refund_by_key(project_id bigint, deposit_id bigint, amount credits.credits,
                                       idempotency_key text) RETURNS bigint
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    earlier credits.transactions;
BEGIN
    SELECT * INTO earlier FROM credits.transactions t
     WHERE t.project_id = _refund_by_key.project_id AND t.idempotency_key = _refund_by_key.idempotency_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF earlier.type::text <> 'refund' OR earlier.lot_id <> deposit_id
       OR (amount IS NOT NULL AND -earlier.amount <> amount) THEN
        PERFORM credits._key_reused(idempotency_key, earlier);
    END IF;
    RETURN earlier.transaction_id;
END $$;
REVOKE ALL ON FUNCTION credits._key_reused(text, credits.transactions) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- balance_overview finds the projects whose lots are not all alike in one set-based join.
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE VIEW credits.balance_overview AS
SELECT a.project_id,
       a.balance AS current_balance,
       v.accumulating,
       v.available_balance,
       v.burn_rate,
       CASE WHEN v.burn_rate > '0'::credits.credits
            THEN round(v.available_balance / v.burn_rate, 2) END AS hours_remaining,
       CASE WHEN v.burn_rate > '0'::credits.credits
            THEN date_trunc('second', credits.now() + (v.available_balance / v.burn_rate) * interval '1 hour')
       END AS runs_out_at,
       coalesce(r.enabled, false) AS auto_recharge_enabled
  FROM credits.accounts a
  LEFT JOIN credits.auto_recharge r ON r.project_id = a.project_id
  LEFT JOIN credits._usage_by_project u ON u.project_id = a.project_id
  -- (the projects whose lots are not all alike: an expiry, a scope or a held refund)
  LEFT JOIN (SELECT DISTINCT l.project_id FROM credits.credit_lots l
              WHERE l.active AND (l.expires_at IS NOT NULL OR l.applies_to IS NOT NULL
                                  OR l.held > '0'::credits.credits)) AS unlike
         ON unlike.project_id = a.project_id
  CROSS JOIN LATERAL (
      SELECT coalesce(u.accumulating, '0'::credits.credits) AS accumulating,
             -- (what the lots have left after the accrued usage, as credits.available_balance();
             -- when they are all alike that is the balance less the accrued usage)
             CASE WHEN unlike.project_id IS NULL
                  THEN credits._available(a.balance, u.accumulating)
                  ELSE credits._lots_available(a.project_id)
             END AS available_balance,
             coalesce(u.burn_rate, '0'::credits.credits) AS burn_rate) AS v;
-- The zero-balance trigger lifts a depleted project only when something that may pay for its
-- instances or volumes is left (credits._lift_threshold; the library's credits_zero_balance_lots).
-- ---------------------------------------------------------------------------------------------
-- What of a project's balance nothing may spend on its instances or volumes now: what its lots
-- hold less what those that may pay for them (this hour) have left after the accrued usage
-- (with lots all alike: the accrued usage, up to the balance).  The zero-balance trigger
-- (src/zero_balance.c) lifts a depleted project whose new balance is above it; a new lot is
-- written before the balance it raises.
CREATE FUNCTION credits._lift_threshold(project_id bigint) RETURNS credits.credits
    LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT coalesce(sum(l.remaining), '0'::credits.credits)
           - credits._spendable(_lift_threshold.project_id, 3, credits.hour_of(credits.now()))
      FROM credits.credit_lots l
     WHERE l.project_id = _lift_threshold.project_id AND l.active;
END;
REVOKE ALL ON FUNCTION credits._lift_threshold(bigint) FROM PUBLIC;
CREATE OR REPLACE FUNCTION credits._zero_balance_trigger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'credits_zero_balance_lots' LANGUAGE C;

-- ---------------------------------------------------------------------------------------------
-- deduct: one home for each rule of the deduction's side.  "Usage has used up the balance" is
-- credits._used_up, on credits._available, in the balance check and in the zero-balance
-- triggers' WHEN clause and function; verify() asks credits._api_usage_hour whether a
-- rolled-up hour is already deducted.  The zero-balance triggers are plpgsql: the C trigger
-- only called SQL back through SPI (its symbols stay in the library for the scripts that name
-- them).
-- ---------------------------------------------------------------------------------------------

-- The checks of credits.verify() for the project scope_id, or for all when it is null.  An
-- unknown project is an error (P0002), not a clean result.  For one project its transactions
-- are read through the indexes (deposits by the history index, usage hour by hour); for all,
-- the whole table.  Planned for each call with scope_id's value (a custom plan): the branches
-- of the other scope are gone before the planner sees the query, and a generic plan, which
-- statistics skewed by other projects could turn into a scan of every project's rows, is never
-- used.  (jit = off: compiling the plan over every project cost more than running it.)
CREATE OR REPLACE FUNCTION credits._verify(scope_id bigint)
    RETURNS TABLE (project_id bigint, problem text)
    LANGUAGE plpgsql STABLE SET plan_cache_mode = force_custom_plan SET jit = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH scope AS (
        SELECT a.* FROM credits.accounts a WHERE _verify.scope_id IS NULL
        UNION ALL
        SELECT a.* FROM credits.accounts a
         WHERE _verify.scope_id IS NOT NULL
           AND a.project_id = (SELECT credits._require_account(_verify.scope_id))),
    -- the transactions of the one project asked about, read once (completed usage hour by
    -- hour, over its deducted hours)
    project_rows AS MATERIALIZED (
        SELECT t.* FROM credits.transactions t
         WHERE t.type <> 'usage' AND t.project_id = _verify.scope_id
        UNION ALL
        SELECT t.* FROM credits._completed_usage t
         WHERE t.project_id = _verify.scope_id
        UNION ALL
        SELECT t.* FROM credits.transactions t
         WHERE t.status = 'accumulating' AND t.project_id = _verify.scope_id),
    -- the lots of the accounts in scope
    lot_rows AS (
        SELECT l.* FROM credits.credit_lots l WHERE _verify.scope_id IS NULL
        UNION ALL
        SELECT l.* FROM credits.credit_lots l WHERE l.project_id = _verify.scope_id),
    -- the transactions of the accounts in scope (all of them: read by each check)
    scoped AS NOT MATERIALIZED (
        SELECT t.* FROM credits.transactions t
         WHERE _verify.scope_id IS NULL
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
     -- (its hour is already deducted when credits._api_usage_hour, the one place that asks,
     -- would count it in another hour; asked as of a time after every hour)
     WHERE credits._api_usage_hour(u.project_id, u.resource_id, u.usage_hour, 'infinity') <> u.usage_hour
    UNION ALL
    SELECT s.project_id, format('balance %s is negative', s.balance)
      FROM scope s WHERE s.balance < '0'::credits.credits
    UNION ALL
    SELECT t.project_id, format('transaction %s belongs to no account', t.transaction_id)
      FROM credits.transactions t
     WHERE _verify.scope_id IS NULL
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
     WHERE _verify.scope_id IS NULL AND t.type = 'usage'
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
     GROUP BY t.project_id HAVING count(*) > 1
    UNION ALL
    -- (lots: each adds up, what they hold is the balance, each credit added is one; the labels
    -- added in 0.2.0 are compared as text)
    SELECT l.project_id,
           format('the lot of transaction %s: amount %s is not remaining %s + used %s + refunded and expired %s, or held %s is not its pending refunds %s',
                  l.transaction_id, l.amount, l.remaining, l.used, coalesce(x.taken, '0'::credits.credits),
                  l.held, coalesce(x.pending, '0'::credits.credits))
      FROM lot_rows l
      LEFT JOIN (SELECT t.lot_id, -sum(t.amount) FILTER (WHERE t.status = 'completed') AS taken,
                        -sum(t.amount) FILTER (WHERE t.status = 'pending') AS pending
                   FROM scoped t WHERE t.lot_id IS NOT NULL GROUP BY t.lot_id) AS x ON x.lot_id = l.transaction_id
     WHERE l.remaining < '0'::credits.credits OR l.remaining > l.amount
        OR l.remaining + l.used + coalesce(x.taken, '0'::credits.credits) <> l.amount
        OR l.held <> coalesce(x.pending, '0'::credits.credits)
    UNION ALL
    SELECT s.project_id, format('its lots hold %s, not the balance %s', coalesce(x.total, '0'::credits.credits), s.balance)
      FROM scope s
      LEFT JOIN (SELECT l.project_id, sum(l.remaining) AS total FROM lot_rows l GROUP BY l.project_id) AS x
        USING (project_id)
     WHERE coalesce(x.total, '0'::credits.credits) <> s.balance
    UNION ALL
    SELECT t.project_id, format('completed %s %s of %s is not a lot of that amount', t.type, t.transaction_id, t.amount)
      FROM scoped t
      LEFT JOIN lot_rows l ON l.transaction_id = t.transaction_id
     WHERE t.status = 'completed' AND t.type::text IN ('deposit', 'auto_recharge', 'grant')
       AND (l.transaction_id IS NULL OR l.project_id <> t.project_id OR l.amount <> t.amount
            OR (l.kind = 'promotional') <> (t.type::text = 'grant'))
    UNION ALL
    -- (each day's usage summary is the sum of that day's completed hours, for every resource
    -- with hours in a summed day, and there is no other; 61_usage_days.sql)
    SELECT coalesce(d.project_id, h.project_id),
           format('the usage summary of %s on %s ', coalesce(d.resource_id, h.resource_id), coalesce(d.day, h.day))
           || CASE WHEN d.project_id IS NULL
                   THEN format('is missing: its hours sum to %s (uncollected %s)', h.amount, h.uncollected)
                   WHEN h.project_id IS NULL
                   THEN format('(%s, uncollected %s) has no completed hours in the project''s summed days',
                               d.amount, d.uncollected)
                   ELSE format('is %s (uncollected %s), but its hours sum to %s (uncollected %s)',
                               d.amount, d.uncollected, h.amount, h.uncollected) END
      FROM (SELECT d.* FROM credits.usage_days d
             WHERE _verify.scope_id IS NULL OR d.project_id = _verify.scope_id) AS d
      FULL JOIN (SELECT t.project_id, date_trunc('day', t.usage_hour, 'UTC') AS day, t.resource_id,
                        sum(t.amount) AS amount, sum(t.uncollected) AS uncollected
                   FROM scoped t
                   JOIN credits.usage_days_summarized s ON s.project_id = t.project_id
                  WHERE t.type = 'usage' AND t.status = 'completed'
                    AND t.usage_hour >= s.summarized_from AND t.usage_hour < s.summarized_until
                  GROUP BY 1, 2, 3) AS h
        ON h.project_id = d.project_id AND h.day = d.day AND h.resource_id = d.resource_id
     WHERE d.project_id IS NULL OR h.project_id IS NULL
        OR d.amount <> h.amount OR d.uncollected <> h.uncollected
    UNION ALL
    SELECT l.project_id, format('transaction %s has a lot but is no completed deposit, auto-recharge or grant', l.transaction_id)
      FROM lot_rows l
     WHERE NOT EXISTS (SELECT FROM scoped t
                        WHERE t.transaction_id = l.transaction_id AND t.status = 'completed'
                          AND t.type::text IN ('deposit', 'auto_recharge', 'grant'));
END $$;

-- Whether usage accrued and not yet deducted (accrued) has used up a balance: nothing of it is
-- available (credits._available).  The one rule of every cut-off, by the balance check and by
-- the zero-balance trigger (inlined wherever it is called).
CREATE OR REPLACE FUNCTION credits._used_up(balance credits.credits, accrued credits.credits) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN credits._available(balance, accrued) = '0'::credits.credits;


-- What of a project's balance nothing may spend on its instances or volumes now: what its lots
-- hold less what those that may pay for them (this hour) have left after the accrued usage
-- (with lots all alike: the accrued usage, up to the balance).  The zero-balance trigger
-- (sql/install/44_zero_balance.sql) lifts a depleted project whose new balance is above it; a
-- new lot is written before the balance it raises.
CREATE OR REPLACE FUNCTION credits._lift_threshold(project_id bigint) RETURNS credits.credits
    LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT coalesce(sum(l.remaining), '0'::credits.credits)
           - credits._spendable(_lift_threshold.project_id, 3, credits.hour_of(credits.now()))
      FROM credits.credit_lots l
     WHERE l.project_id = _lift_threshold.project_id AND l.active;
END;

DROP TRIGGER zero_balance_decide ON credits.accounts;
DROP TRIGGER zero_balance_enforce ON credits.accounts;
DROP FUNCTION credits._zero_balance_trigger();


-- BEFORE UPDATE of an account, called only when its WHEN clause finds a balance that reached
-- zero from above (used up with nothing accrued; an account never funded has not reached
-- zero) or a deposit or grant into a depleted account: sets depleted as the balance demands.
-- A balance that reached zero is depleted; a depleted account stays so until something that
-- may pay for instances or volumes is left of its lots after the usage accrued and not yet
-- deducted: until the balance is no longer used up by credits._lift_threshold (without grants
-- or refunds, the accrued usage).
CREATE FUNCTION credits._zero_balance_decide() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NOT NEW.depleted THEN
        NEW.depleted := true;
    ELSE
        NEW.depleted := credits._used_up(NEW.balance, credits._lift_threshold(NEW.project_id));
    END IF;
    RETURN NEW;
END $$;

-- AFTER UPDATE of an account whose depleted flag changed: carries it out in the same
-- transaction (set: credits._cut_off; cleared: credits._restore_volumes, once something may pay
-- for this hour of a volume: credit for instances only lifts the project and leaves its volumes
-- locked).
CREATE FUNCTION credits._zero_balance_enforce() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.depleted THEN
        PERFORM credits._cut_off(NEW.project_id, credits.now());
    ELSIF credits._spendable(NEW.project_id, 2, credits.hour_of(credits.now())) > '0'::credits.credits THEN
        PERFORM credits._restore_volumes(NEW.project_id, credits.now());
    END IF;
    RETURN NULL;
END $$;

-- (the WHEN clauses keep every ordinary balance change, such as the deduction's debit of every
-- account, off the trigger functions; _used_up is inlined there)
CREATE TRIGGER zero_balance_decide
    BEFORE UPDATE OF balance, depleted ON credits.accounts FOR EACH ROW
    WHEN ((NOT NEW.depleted AND OLD.balance > '0'::credits.credits
           AND credits._used_up(NEW.balance, '0'::credits.credits))
          OR (NEW.depleted AND NEW.balance > OLD.balance))
    EXECUTE FUNCTION credits._zero_balance_decide();

CREATE TRIGGER zero_balance_enforce
    AFTER UPDATE OF balance, depleted ON credits.accounts FOR EACH ROW
    WHEN (OLD.depleted IS DISTINCT FROM NEW.depleted)
    EXECUTE FUNCTION credits._zero_balance_enforce();

REVOKE ALL ON FUNCTION credits._zero_balance_decide() FROM PUBLIC;
REVOKE ALL ON FUNCTION credits._zero_balance_enforce() FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- A rate change that makes the start check act on a budget stop leaves the stopped instance
-- stopped.
-- ---------------------------------------------------------------------------------------------
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
    PERFORM credits._require_available_balance(project_id, kind);
    SELECT * INTO r FROM credits.resources x
     WHERE x.project_id = _activate.project_id AND x.resource_id = _activate.resource_id FOR UPDATE;
    -- Spending limits (62_limits.sql), for a call that starts billing or changes the rate.
    IF r.project_id IS NULL OR r.kind = kind AND (r.state = 'stopped' OR r.state = active_state
                                                  AND r.rate_per_hour <> rate_per_hour) THEN
        PERFORM credits._check_start_limits(project_id, resource_id, kind, rate_per_hour,
                                            CASE WHEN r.state = active_state THEN r.rate_per_hour END);
        -- The check acts on a budget reached since the last balance check; under on_budget
        -- 'stop' that stops the project's running instances, this one too: the stop stands,
        -- and a rate change of an instance it stopped does nothing more.
        IF r.state = active_state AND NOT EXISTS (
               SELECT FROM credits.resources x
                WHERE x.project_id = _activate.project_id AND x.resource_id = _activate.resource_id
                  AND x.state = active_state) THEN
            RETURN;
        END IF;
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

-- ---------------------------------------------------------------------------------------------
-- Daily usage summaries, for statements.  A statement sums a project's usage since its first
-- day; read hour by hour, a year is 8,760 probes of the usage index and as many heap pages
-- (each hour's rows are written with every other project's).  So each UTC day that a project
-- has deducted whole is summed once, by resource, into credits.usage_days, by
-- credits.run_usage_summaries() (a pg_cron job, credits.schedule_jobs): completed usage rows
-- never change, so a day's sums never do either, but for one case: a late API call can add a
-- row to a deducted hour, and the hourly run then has its day summed again
-- (credits._unsum_late_usage).  Each project's summaries cover one range of
-- whole days, [summarized_from, summarized_until) in credits.usage_days_summarized; statements
-- read those days from the summaries and every other hour from the usage rows, so a statement
-- is the same with or without them.  credits.verify() checks each summary against its hours.
-- ---------------------------------------------------------------------------------------------

-- What a project's completed usage of one resource took from the balance on one UTC day, and
-- what the balance could not pay.
CREATE TABLE credits.usage_days (
    project_id  bigint NOT NULL,
    day         timestamptz NOT NULL CHECK (day = date_trunc('day', day, 'UTC')),
    resource_id text NOT NULL,
    amount      credits.credits NOT NULL CHECK (amount <= '0'::credits.credits),
    uncollected credits.credits NOT NULL CHECK (uncollected >= '0'::credits.credits),
    PRIMARY KEY (project_id, day, resource_id)
);

-- The whole days [summarized_from, summarized_until) of each project whose usage is summed in
-- credits.usage_days (a project without a row has none).  (No foreign key to the accounts,
-- which are never deleted: its check would lock the account row, and the job would wait for
-- a transaction that holds it.)
CREATE TABLE credits.usage_days_summarized (
    project_id       bigint PRIMARY KEY,
    summarized_from  timestamptz NOT NULL CHECK (summarized_from = date_trunc('day', summarized_from, 'UTC')),
    summarized_until timestamptz NOT NULL CHECK (summarized_until = date_trunc('day', summarized_until, 'UTC')),
    CHECK (summarized_from < summarized_until)
);

-- Sums the next whole deducted day of every project whose summaries have not reached it, the
-- oldest day first, at most max_days days per call; returns the number of project-days
-- summed.  A project's next day is the day after its summaries (or the day of its first
-- deducted hour), once its deducted hours pass that day's end.  Calls take turns (the table
-- lock); reads and deductions do not wait for them.  Each day's rows are read by hour and
-- project from the usage index.
CREATE FUNCTION credits.run_usage_summaries(max_days integer DEFAULT 7) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp SET jit = off AS $$
DECLARE
    next_day timestamptz;
    ids bigint[];
    summed bigint := 0;
BEGIN
    PERFORM credits._require('max_days', max_days IS NULL);
    IF max_days < 1 THEN
        RAISE EXCEPTION 'max_days must be at least 1, got %', max_days USING ERRCODE = 'invalid_parameter_value';
    END IF;
    LOCK TABLE credits.usage_days_summarized IN SHARE ROW EXCLUSIVE MODE;
    FOR i IN 1 .. max_days LOOP
        SELECT x.day, array_agg(x.project_id ORDER BY x.project_id) INTO next_day, ids
          FROM (SELECT a.project_id,
                       coalesce(s.summarized_until, date_trunc('day', a.deducted_from, 'UTC')) AS day,
                       a.deducted_until
                  FROM credits.accounts a
                  LEFT JOIN credits.usage_days_summarized s ON s.project_id = a.project_id
                 WHERE a.deducted_from IS NOT NULL) AS x
         WHERE x.day + interval '1 day' <= x.deducted_until
         GROUP BY x.day ORDER BY x.day LIMIT 1;
        EXIT WHEN next_day IS NULL;
        INSERT INTO credits.usage_days (project_id, day, resource_id, amount, uncollected)
        SELECT t.project_id, next_day, t.resource_id, sum(t.amount), sum(t.uncollected)
          FROM credits.transactions t
         WHERE t.type = 'usage' AND t.status = 'completed'
           AND t.usage_hour = ANY (ARRAY(SELECT generate_series(next_day, next_day + interval '23 hours',
                                                                interval '1 hour')))
           AND t.project_id = ANY (ids)
         GROUP BY t.project_id, t.resource_id;
        INSERT INTO credits.usage_days_summarized AS s (project_id, summarized_from, summarized_until)
        SELECT p, next_day, next_day + interval '1 day' FROM unnest(ids) AS p
            ON CONFLICT (project_id) DO UPDATE SET summarized_until = excluded.summarized_until;
        summed := summed + cardinality(ids);
    END LOOP;
    RETURN summed;
END $$;
-- The projects whose roll-up holds API usage for a day their summaries already cover, with
-- where their summaries begin and the first such day.  (Each hourly run asks: the roll-up rows
-- after every summed range, the last hour's nearly all, are passed over before the join.)
CREATE FUNCTION credits._late_summed_days()
    RETURNS TABLE (project_id bigint, summarized_from timestamptz, day timestamptz)
    LANGUAGE sql STABLE AS $$
    SELECT s.project_id, s.summarized_from, date_trunc('day', min(u.usage_hour), 'UTC')
      FROM credits.usage_rollup u
      JOIN credits.usage_days_summarized s ON s.project_id = u.project_id
     WHERE u.usage_hour < s.summarized_until
       AND u.usage_hour < (SELECT max(x.summarized_until) FROM credits.usage_days_summarized x)
     GROUP BY s.project_id, s.summarized_from;
$$;

-- Has the summaries of every project whose roll-up holds API usage for a day they already
-- cover summed again from that day (its rows deleted, its range cut back there): the
-- deduction that follows completes that hour, which changes the day's sums.  (A call that
-- committed after its hour was deducted, for a product with no usage in that hour, is charged
-- in that hour, 41_usage_booking.sql.  Rare: only then is the summaries' lock taken, waiting
-- for a run_usage_summaries call in progress; the days are read again under it.)  Called by
-- run_hourly_deductions after the fold and before the deduction, under the periodic-run lock.
CREATE FUNCTION credits._unsum_late_usage() RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM credits._late_summed_days()) THEN
        RETURN;
    END IF;
    LOCK TABLE credits.usage_days_summarized IN SHARE ROW EXCLUSIVE MODE;
    WITH late AS (SELECT * FROM credits._late_summed_days()),
    unsummed AS (
        DELETE FROM credits.usage_days d USING late l
         WHERE d.project_id = l.project_id AND d.day >= l.day),
    cut_back AS (
        UPDATE credits.usage_days_summarized s SET summarized_until = l.day
          FROM late l WHERE s.project_id = l.project_id AND l.day > l.summarized_from)
    DELETE FROM credits.usage_days_summarized s USING late l
     WHERE s.project_id = l.project_id AND l.day <= l.summarized_from;
END $$;

REVOKE ALL ON FUNCTION credits.run_usage_summaries(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION credits._unsum_late_usage(), credits._late_summed_days() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION credits.run_usage_summaries(integer) TO credits_worker;
SELECT pg_catalog.pg_extension_config_dump('credits.usage_days', '');
SELECT pg_catalog.pg_extension_config_dump('credits.usage_days_summarized', '');
COMMENT ON FUNCTION credits.run_usage_summaries(integer) IS 'sums each whole UTC day a project has deducted into credits.usage_days, which statements read, the oldest day first, at most max_days days per call; returns the project-days summed (hourly, credits_worker)';
COMMENT ON TABLE credits.usage_days IS 'per project, UTC day and resource: what its completed usage took from the balance (amount, negative) and what the balance could not pay (uncollected); written by run_usage_summaries, and summed again from a day that a late API call adds to';
COMMENT ON TABLE credits.usage_days_summarized IS 'per project: the whole days [summarized_from, summarized_until) summed in credits.usage_days';

-- The jobs: name, cron schedule (UTC), command.
CREATE OR REPLACE FUNCTION credits._jobs() RETURNS TABLE (job_name text, schedule text, command text)
    LANGUAGE sql IMMUTABLE AS $$
    VALUES ('credits-hourly-deductions', '0 * * * *', 'SELECT credits.run_hourly_deductions()'),
           ('credits-balance-checks',    '* * * * *', 'SELECT credits.run_balance_checks()'),
           ('credits-usage-summaries',   '20 * * * *', 'SELECT credits.run_usage_summaries()');
$$;
