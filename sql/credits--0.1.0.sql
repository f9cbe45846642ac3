\echo Use "CREATE EXTENSION credits" to load this file. \quit

-- ---------------------------------------------------------------------------
-- The credits type: an exact amount, a signed 64-bit count of micro-credits
-- (10^-6 credit), from -9223372036854.775808 to 9223372036854.775807.
-- Every result with more than 6 fraction digits is rounded half to even;
-- every overflow raises 22003 "credits out of range".
-- ---------------------------------------------------------------------------

CREATE TYPE credits.credits;

CREATE FUNCTION credits.credits_in(cstring) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits_out(credits.credits) RETURNS cstring
    AS 'MODULE_PATHNAME', 'credits_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits_recv(internal) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits_send(credits.credits) RETURNS bytea
    AS 'MODULE_PATHNAME', 'credits_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE credits.credits (
    INPUT = credits.credits_in,
    OUTPUT = credits.credits_out,
    RECEIVE = credits.credits_recv,
    SEND = credits.credits_send,
    LIKE = pg_catalog.int8,        -- 8 bytes, by value, double alignment
    CATEGORY = 'N'                 -- numeric, like money
);
COMMENT ON TYPE credits.credits IS
    'exact amount of credits: a signed 64-bit count of micro-credits, rounded half to even';

-- ---------------------------------------------------------------------------
-- Arithmetic (credits_arith.c, credits_numeric.c)
-- ---------------------------------------------------------------------------

CREATE FUNCTION credits.credits_pl(credits.credits, credits.credits) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_pl' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits_mi(credits.credits, credits.credits) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_mi' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits_um(credits.credits) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_um' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits_up(credits.credits) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_up' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.abs(credits.credits) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_abs' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION credits.credits_mul_numeric(credits.credits, numeric) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_mul_numeric' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.numeric_mul_credits(numeric, credits.credits) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'numeric_mul_credits' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits_mul_int4(credits.credits, integer) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_mul_int4' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.int4_mul_credits(integer, credits.credits) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'int4_mul_credits' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits_mul_int8(credits.credits, bigint) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_mul_int8' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.int8_mul_credits(bigint, credits.credits) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'int8_mul_credits' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION credits.credits_div_numeric(credits.credits, numeric) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_div_numeric' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits_div_int4(credits.credits, integer) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_div_int4' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits_div_int8(credits.credits, bigint) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_div_int8' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits_div_credits(credits.credits, credits.credits) RETURNS numeric
    AS 'MODULE_PATHNAME', 'credits_div_credits' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE OPERATOR credits.+ (
    LEFTARG = credits.credits, RIGHTARG = credits.credits,
    FUNCTION = credits.credits_pl, COMMUTATOR = OPERATOR(credits.+));
CREATE OPERATOR credits.- (
    LEFTARG = credits.credits, RIGHTARG = credits.credits, FUNCTION = credits.credits_mi);
CREATE OPERATOR credits.- (RIGHTARG = credits.credits, FUNCTION = credits.credits_um);
CREATE OPERATOR credits.+ (RIGHTARG = credits.credits, FUNCTION = credits.credits_up);

CREATE OPERATOR credits.* (
    LEFTARG = credits.credits, RIGHTARG = numeric,
    FUNCTION = credits.credits_mul_numeric, COMMUTATOR = OPERATOR(credits.*));
CREATE OPERATOR credits.* (
    LEFTARG = numeric, RIGHTARG = credits.credits,
    FUNCTION = credits.numeric_mul_credits, COMMUTATOR = OPERATOR(credits.*));
CREATE OPERATOR credits.* (
    LEFTARG = credits.credits, RIGHTARG = integer,
    FUNCTION = credits.credits_mul_int4, COMMUTATOR = OPERATOR(credits.*));
CREATE OPERATOR credits.* (
    LEFTARG = integer, RIGHTARG = credits.credits,
    FUNCTION = credits.int4_mul_credits, COMMUTATOR = OPERATOR(credits.*));
CREATE OPERATOR credits.* (
    LEFTARG = credits.credits, RIGHTARG = bigint,
    FUNCTION = credits.credits_mul_int8, COMMUTATOR = OPERATOR(credits.*));
CREATE OPERATOR credits.* (
    LEFTARG = bigint, RIGHTARG = credits.credits,
    FUNCTION = credits.int8_mul_credits, COMMUTATOR = OPERATOR(credits.*));

CREATE OPERATOR credits./ (
    LEFTARG = credits.credits, RIGHTARG = numeric, FUNCTION = credits.credits_div_numeric);
CREATE OPERATOR credits./ (
    LEFTARG = credits.credits, RIGHTARG = integer, FUNCTION = credits.credits_div_int4);
CREATE OPERATOR credits./ (
    LEFTARG = credits.credits, RIGHTARG = bigint, FUNCTION = credits.credits_div_int8);
CREATE OPERATOR credits./ (
    LEFTARG = credits.credits, RIGHTARG = credits.credits, FUNCTION = credits.credits_div_credits);

-- ---------------------------------------------------------------------------
-- Casts: to and from numbers only on assignment or with an explicit cast,
-- never silently inside an expression (as for money).
-- ---------------------------------------------------------------------------

CREATE FUNCTION credits.credits(numeric) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_from_numeric' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits(integer) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_from_int4' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits(bigint) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_from_int8' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.numeric(credits.credits) RETURNS numeric
    AS 'MODULE_PATHNAME', 'credits_to_numeric' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE CAST (numeric AS credits.credits)
    WITH FUNCTION credits.credits(numeric) AS ASSIGNMENT;
CREATE CAST (integer AS credits.credits)
    WITH FUNCTION credits.credits(integer) AS ASSIGNMENT;
CREATE CAST (bigint AS credits.credits)
    WITH FUNCTION credits.credits(bigint) AS ASSIGNMENT;
CREATE CAST (credits.credits AS numeric)
    WITH FUNCTION credits.numeric(credits.credits) AS ASSIGNMENT;
CREATE CAST (credits.credits AS text)
    WITH INOUT AS ASSIGNMENT;

-- ---------------------------------------------------------------------------
-- Comparison, btree and hash support: the int8 functions, which see the
-- same 8 bytes (as contrib isn does).
-- ---------------------------------------------------------------------------

CREATE FUNCTION credits.credits_eq(credits.credits, credits.credits) RETURNS boolean
    AS 'int8eq' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION credits.credits_ne(credits.credits, credits.credits) RETURNS boolean
    AS 'int8ne' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION credits.credits_lt(credits.credits, credits.credits) RETURNS boolean
    AS 'int8lt' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION credits.credits_le(credits.credits, credits.credits) RETURNS boolean
    AS 'int8le' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION credits.credits_gt(credits.credits, credits.credits) RETURNS boolean
    AS 'int8gt' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION credits.credits_ge(credits.credits, credits.credits) RETURNS boolean
    AS 'int8ge' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION credits.credits_cmp(credits.credits, credits.credits) RETURNS integer
    AS 'btint8cmp' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION credits.credits_sortsupport(internal) RETURNS void
    AS 'btint8sortsupport' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits_hash(credits.credits) RETURNS integer
    AS 'hashint8' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits_hash_extended(credits.credits, bigint) RETURNS bigint
    AS 'hashint8extended' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits_smaller(credits.credits, credits.credits) RETURNS credits.credits
    AS 'int8smaller' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits_larger(credits.credits, credits.credits) RETURNS credits.credits
    AS 'int8larger' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE;

CREATE OPERATOR credits.= (
    LEFTARG = credits.credits, RIGHTARG = credits.credits, FUNCTION = credits.credits_eq,
    COMMUTATOR = OPERATOR(credits.=), NEGATOR = OPERATOR(credits.<>),
    RESTRICT = eqsel, JOIN = eqjoinsel, HASHES, MERGES);
CREATE OPERATOR credits.<> (
    LEFTARG = credits.credits, RIGHTARG = credits.credits, FUNCTION = credits.credits_ne,
    COMMUTATOR = OPERATOR(credits.<>), NEGATOR = OPERATOR(credits.=),
    RESTRICT = neqsel, JOIN = neqjoinsel);
CREATE OPERATOR credits.< (
    LEFTARG = credits.credits, RIGHTARG = credits.credits, FUNCTION = credits.credits_lt,
    COMMUTATOR = OPERATOR(credits.>), NEGATOR = OPERATOR(credits.>=),
    RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
CREATE OPERATOR credits.<= (
    LEFTARG = credits.credits, RIGHTARG = credits.credits, FUNCTION = credits.credits_le,
    COMMUTATOR = OPERATOR(credits.>=), NEGATOR = OPERATOR(credits.>),
    RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR credits.> (
    LEFTARG = credits.credits, RIGHTARG = credits.credits, FUNCTION = credits.credits_gt,
    COMMUTATOR = OPERATOR(credits.<), NEGATOR = OPERATOR(credits.<=),
    RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
CREATE OPERATOR credits.>= (
    LEFTARG = credits.credits, RIGHTARG = credits.credits, FUNCTION = credits.credits_ge,
    COMMUTATOR = OPERATOR(credits.<=), NEGATOR = OPERATOR(credits.<),
    RESTRICT = scalargesel, JOIN = scalargejoinsel);

CREATE OPERATOR CLASS credits.credits_ops
    DEFAULT FOR TYPE credits.credits USING btree AS
        OPERATOR 1 credits.<,
        OPERATOR 2 credits.<=,
        OPERATOR 3 credits.=,
        OPERATOR 4 credits.>=,
        OPERATOR 5 credits.>,
        FUNCTION 1 credits.credits_cmp(credits.credits, credits.credits),
        FUNCTION 2 credits.credits_sortsupport(internal),
        FUNCTION 4 pg_catalog.btequalimage(oid);

CREATE OPERATOR CLASS credits.credits_ops
    DEFAULT FOR TYPE credits.credits USING hash AS
        OPERATOR 1 credits.=,
        FUNCTION 1 credits.credits_hash(credits.credits),
        FUNCTION 2 credits.credits_hash_extended(credits.credits, bigint);

-- ---------------------------------------------------------------------------
-- Aggregates (credits_agg.c): exact int128 running sums, parallel safe.
-- ---------------------------------------------------------------------------

CREATE FUNCTION credits.credits_agg_accum(internal, credits.credits) RETURNS internal
    AS 'MODULE_PATHNAME', 'credits_agg_accum' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION credits.credits_agg_accum_inv(internal, credits.credits) RETURNS internal
    AS 'MODULE_PATHNAME', 'credits_agg_accum_inv' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION credits.credits_agg_combine(internal, internal) RETURNS internal
    AS 'MODULE_PATHNAME', 'credits_agg_combine' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION credits.credits_agg_serialize(internal) RETURNS bytea
    AS 'MODULE_PATHNAME', 'credits_agg_serialize' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits_agg_deserialize(bytea, internal) RETURNS internal
    AS 'MODULE_PATHNAME', 'credits_agg_deserialize' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits_sum_final(internal) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_sum_final' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION credits.credits_avg_final(internal) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_avg_final' LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE AGGREGATE credits.sum(credits.credits) (
    SFUNC = credits.credits_agg_accum,
    STYPE = internal,
    SSPACE = 32,
    FINALFUNC = credits.credits_sum_final,
    COMBINEFUNC = credits.credits_agg_combine,
    SERIALFUNC = credits.credits_agg_serialize,
    DESERIALFUNC = credits.credits_agg_deserialize,
    MSFUNC = credits.credits_agg_accum,
    MINVFUNC = credits.credits_agg_accum_inv,
    MSTYPE = internal,
    MSSPACE = 32,
    MFINALFUNC = credits.credits_sum_final,
    PARALLEL = SAFE);

CREATE AGGREGATE credits.avg(credits.credits) (
    SFUNC = credits.credits_agg_accum,
    STYPE = internal,
    SSPACE = 32,
    FINALFUNC = credits.credits_avg_final,
    COMBINEFUNC = credits.credits_agg_combine,
    SERIALFUNC = credits.credits_agg_serialize,
    DESERIALFUNC = credits.credits_agg_deserialize,
    MSFUNC = credits.credits_agg_accum,
    MINVFUNC = credits.credits_agg_accum_inv,
    MSTYPE = internal,
    MSSPACE = 32,
    MFINALFUNC = credits.credits_avg_final,
    PARALLEL = SAFE);

CREATE AGGREGATE credits.min(credits.credits) (
    SFUNC = credits.credits_smaller,
    STYPE = credits.credits,
    COMBINEFUNC = credits.credits_smaller,
    SORTOP = OPERATOR(credits.<),
    PARALLEL = SAFE);

CREATE AGGREGATE credits.max(credits.credits) (
    SFUNC = credits.credits_larger,
    STYPE = credits.credits,
    COMBINEFUNC = credits.credits_larger,
    SORTOP = OPERATOR(credits.>),
    PARALLEL = SAFE);
-- ---------------------------------------------------------------------------------------------
-- Settings and time (src/settings.c).  Every billing function reads the time from
-- credits.now() and the minimum deposit from credits.minimum_deposit().
-- ---------------------------------------------------------------------------------------------

-- now(), or the timestamptz in the superuser-only setting credits.clock.
CREATE FUNCTION credits.now() RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'credits_now' LANGUAGE C STABLE PARALLEL SAFE;

-- The smallest deposit: the superuser-only setting credits.minimum_deposit (default 5.00).
CREATE FUNCTION credits._minimum_deposit_text() RETURNS text
    AS 'MODULE_PATHNAME', 'credits_minimum_deposit_text' LANGUAGE C STABLE PARALLEL SAFE;
CREATE FUNCTION credits.minimum_deposit() RETURNS credits.credits
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN credits._minimum_deposit_text()::credits.credits;

-- How long a claimed event stays with its worker (setting credits.event_lease, default 5 min).
CREATE FUNCTION credits.event_lease() RETURNS interval
    AS 'MODULE_PATHNAME', 'credits_event_lease_interval' LANGUAGE C STABLE PARALLEL SAFE;

-- Start of the UTC hour that ts falls in: billing hours are UTC hours [h, h+1), whatever the
-- session's time zone (src/usage_math.c: one integer floor, called per request by
-- record_usage and per usage row by the usage_shape check).  Infinities stay as they are.
CREATE FUNCTION credits.hour_of(ts timestamptz) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'credits_hour_of' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Exact accrual (src/usage_math.c): rate-microseconds over [from, upto), and their amount.
-- An amount past the credits range is charged as the range's end (9223372036854.775807): no
-- balance holds more, so what is collected is exact, and the units stay exact.
CREATE FUNCTION credits._accrual(rate_per_hour credits.credits, from_ts timestamptz, upto timestamptz)
    RETURNS numeric AS 'MODULE_PATHNAME', 'credits_accrual' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits._accrued_amount(units numeric) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_accrued_amount' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Usage totals that one project's runaway usage cannot make fail for every project
-- (src/credits_agg.c, on sum(credits)'s exact int128 state): _units_sum(amount) is the
-- total of API amounts as rate-microseconds, exact; _usage_total(amount) is a total of usage
-- amounts clamped to the range's ends, as _accrued_amount clamps an hour.
CREATE FUNCTION credits._usage_total_final(internal) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_usage_total_final' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION credits._units_sum_final(internal) RETURNS numeric
    AS 'MODULE_PATHNAME', 'credits_units_sum_final' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE AGGREGATE credits._usage_total(credits.credits) (
    SFUNC = credits.credits_agg_accum, STYPE = internal, SSPACE = 32,
    FINALFUNC = credits._usage_total_final,
    COMBINEFUNC = credits.credits_agg_combine,
    SERIALFUNC = credits.credits_agg_serialize, DESERIALFUNC = credits.credits_agg_deserialize,
    PARALLEL = SAFE);
CREATE AGGREGATE credits._units_sum(credits.credits) (
    SFUNC = credits.credits_agg_accum, STYPE = internal, SSPACE = 32,
    FINALFUNC = credits._units_sum_final,
    COMBINEFUNC = credits.credits_agg_combine,
    SERIALFUNC = credits.credits_agg_serialize, DESERIALFUNC = credits.credits_agg_deserialize,
    PARALLEL = SAFE);

-- The UTC hours that [from, upto) touches, with the rate-microseconds accrued in each.
-- Not STRICT (a null argument gives no rows all the same): the planner inlines only
-- non-strict SQL set-returning functions, and the periodic runs call this for every billing
-- resource (inlined it costs a few microseconds per call instead of about 25).
CREATE FUNCTION credits._hour_segments(rate_per_hour credits.credits, from_ts timestamptz, upto timestamptz)
    RETURNS TABLE (usage_hour timestamptz, units numeric)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT h, credits._accrual(rate_per_hour, greatest(from_ts, h), least(upto, h + interval '1 hour'))
      FROM generate_series(credits.hour_of(from_ts), upto - interval '1 microsecond', interval '1 hour') AS h
     WHERE upto > from_ts AND rate_per_hour IS NOT NULL;
END;
-- ---------------------------------------------------------------------------------------------
-- The ledger: accounts, payment methods, transactions and the events outbox.
--
-- Money rules the database itself enforces:
--   * a balance is never negative                        (CHECK on accounts.balance)
--   * one usage transaction per (project, resource, hour) (unique index)
--   * every transaction belongs to an account, and a deposit's method exists
--                                          (trigger transactions_known_references, per statement)
--   * at most one pending auto-recharge per project     (unique partial index)
--   * an idempotency key names one deposit per project   (unique partial index)
--   * status moves only pending → completed | failed and accumulating → completed, and a
--     completed or failed transaction never changes      (trigger transactions_guard)
-- The balance equals the sum of completed transactions' collected amounts; verify() checks it.
-- ---------------------------------------------------------------------------------------------

CREATE TYPE credits.transaction_type AS ENUM ('deposit', 'usage', 'auto_recharge');
CREATE TYPE credits.transaction_status AS ENUM ('pending', 'completed', 'failed', 'accumulating');

CREATE TABLE credits.accounts (
    project_id  bigint PRIMARY KEY,
    balance     credits.credits NOT NULL DEFAULT '0'
                CONSTRAINT balance_not_negative CHECK (balance >= '0'::credits.credits),
    -- Zero-balance enforcement is in force: instances were terminated and volumes locked.
    -- Set when the balance reaches zero or accrued usage uses up the available balance;
    -- cleared when a deposit makes the available balance positive (src/zero_balance.c).
    depleted    boolean NOT NULL DEFAULT false,
    -- The end of the project's last deducted hour: its billable time before it is in completed
    -- usage transactions (sql/install/40_metering_tables.sql).
    deducted_until timestamptz NOT NULL DEFAULT '-infinity',
    -- The start of the project's oldest deducted hour (null before its first deduction).  Its
    -- completed usage transactions are all in [deducted_from, deducted_until): one project's
    -- usage is read over those hours, not over every hour in the database
    -- (credits._completed_usage).  Both are moved only by the deduction that completes them.
    deducted_from timestamptz,
    opened_at   timestamptz NOT NULL,
    CONSTRAINT deducted_hours CHECK (deducted_from < deducted_until)
)
-- Half-empty pages: a balance update (every deposit; the hourly deduction debits every
-- account with usage) finds room on its page and stays a heap-only update, with no new index
-- entry.
WITH (fillfactor = 50);

CREATE TABLE credits.payment_methods (
    method_id    bigserial PRIMARY KEY,
    project_id   bigint NOT NULL REFERENCES credits.accounts,
    provider_ref text NOT NULL CHECK (length(provider_ref) BETWEEN 1 AND 200),
    label        text CHECK (length(label) <= 200),
    is_default   boolean NOT NULL DEFAULT false,
    added_at     timestamptz NOT NULL,
    removed_at   timestamptz,
    CHECK (NOT (is_default AND removed_at IS NOT NULL))
);
CREATE UNIQUE INDEX payment_methods_one_default ON credits.payment_methods (project_id) WHERE is_default;
CREATE UNIQUE INDEX payment_methods_active_ref ON credits.payment_methods (project_id, provider_ref)
    WHERE removed_at IS NULL;

CREATE TABLE credits.transactions (
    -- Unique: one sequence numbers every transaction (the index covers deposits and
    -- auto-recharges; usage rows, a million an hour, are found by project, hour and resource).
    transaction_id  bigserial NOT NULL,
    project_id      bigint NOT NULL,
    type            credits.transaction_type NOT NULL,
    status          credits.transaction_status NOT NULL,
    -- Signed: deposits and auto-recharges positive, usage negative (what was, or so far would
    -- be, taken).  For usage it is -round_half_even(accrued_units / 3.6e9).
    amount          credits.credits NOT NULL,
    -- Usage only: the part of the charge the balance could not cover.
    uncollected     credits.credits NOT NULL DEFAULT '0',
    -- Deposits: when requested.  Usage: the start of its UTC hour.
    created_at      timestamptz NOT NULL,
    description     text NOT NULL,
    -- Usage: the resource and hour, and the exact rate-microseconds accrued (src/usage_math.c).
    resource_id     text,
    usage_hour      timestamptz,
    accrued_units   numeric,
    -- Deposits and auto-recharges.
    method_id       bigint,
    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    invoice_url     text CHECK (length(invoice_url) BETWEEN 1 AND 2048),
    failure_reason  text CHECK (length(failure_reason) <= 2000),
    completed_at    timestamptz,
    failed_at       timestamptz,
    CONSTRAINT usage_shape CHECK (
        CASE WHEN type = 'usage'
             THEN resource_id IS NOT NULL AND usage_hour IS NOT NULL AND accrued_units IS NOT NULL
                  -- (a whole UTC hour: credits._completed_usage finds rows hour by hour)
                  AND usage_hour = credits.hour_of(usage_hour)
                  AND status IN ('accumulating', 'completed') AND amount <= '0'::credits.credits
                  AND uncollected >= '0'::credits.credits AND uncollected <= -amount
                  AND method_id IS NULL AND idempotency_key IS NULL
             ELSE resource_id IS NULL AND usage_hour IS NULL AND accrued_units IS NULL
                  AND status IN ('pending', 'completed', 'failed') AND amount > '0'::credits.credits
                  AND uncollected = '0'::credits.credits
        END),
    CONSTRAINT status_times CHECK (
        (completed_at IS NOT NULL) = (status = 'completed')
        AND (failed_at IS NOT NULL) = (status = 'failed'))
);
-- Usage rows are written a million an hour, so they are in one index only: this one, ordered
-- by hour first.  Each hourly run's new rows then go to its right edge, page after page, and
-- no older page is read or written again; ordered by project first, every run would touch a
-- page of every project's history (at 100,000 projects with a day of history, 1.7-2.7x
-- slower, and worse as history grows).  It also serves one project's completed usage, probed
-- hour by hour over its deducted hours (credits._completed_usage), and the lookups of booking
-- and deduction by their full key.  Accumulating hours have an index by project of their own
-- (they are few: the hours not yet deducted); deposits and auto-recharges have the id and
-- history indexes.
CREATE UNIQUE INDEX transactions_deposit_ids ON credits.transactions (transaction_id) WHERE type <> 'usage';
CREATE UNIQUE INDEX transactions_one_usage_per_hour
    ON credits.transactions (usage_hour, project_id, resource_id) WHERE type = 'usage';
CREATE UNIQUE INDEX transactions_idempotency_key
    ON credits.transactions (project_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX transactions_one_pending_auto_recharge
    ON credits.transactions (project_id) WHERE type = 'auto_recharge' AND status = 'pending';
CREATE INDEX transactions_accumulating
    ON credits.transactions (project_id, usage_hour) WHERE status = 'accumulating';
CREATE INDEX transactions_history ON credits.transactions (project_id, created_at DESC) WHERE type <> 'usage';

-- The outbox: what the outside world must act on, written in the transaction that caused it.
CREATE TABLE credits.events (
    event_id       bigserial PRIMARY KEY,
    project_id     bigint NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('charge_requested', 'instance_terminated',
                       'volume_inaccessible', 'volume_available', 'balance_depleted')),
    resource_id    text,
    transaction_id bigint,
    payload        jsonb NOT NULL,
    created_at     timestamptz NOT NULL,
    claimed_until  timestamptz,          -- handed to a worker until then
    claims         integer NOT NULL DEFAULT 0,
    acked_at       timestamptz
);
CREATE INDEX events_unacked ON credits.events (event_id) WHERE acked_at IS NULL;
-- ---------------------------------------------------------------------------------------------
-- Argument checks shared by every API function, the outbox writer, and the trigger that keeps
-- the ledger's history legal.
-- ---------------------------------------------------------------------------------------------

-- Raises 22004 when a required argument is null.
CREATE FUNCTION credits._require(arg_name text, is_null boolean) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF is_null THEN
        RAISE EXCEPTION '% must not be null', arg_name USING ERRCODE = 'null_value_not_allowed';
    END IF;
END $$;

-- Raises unless the project has an account (P0002); returns its id.
CREATE FUNCTION credits._require_account(project_id bigint) RETURNS bigint
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM credits._require('project_id', project_id IS NULL);
    PERFORM FROM credits.accounts a WHERE a.project_id = _require_account.project_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown project %', project_id USING ERRCODE = 'no_data_found',
            HINT = 'Open it first with credits.open_account().';
    END IF;
    RETURN project_id;
END $$;

-- Raises 22023 unless amount is positive and at most one billion credits (22004 when it is
-- null).  The ceiling keeps each deposit, auto-recharge, rate per hour and API usage far
-- below the range of credits: without it, a deposit the balance could never hold was taken
-- (and failed only at complete_deposit, after the card was charged), and two API usages near
-- the top of the range made every later periodic run fail with 22003, for every project.
CREATE FUNCTION credits._require_positive(arg_name text, amount credits.credits) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    PERFORM credits._require(arg_name, amount IS NULL);
    IF amount <= '0'::credits.credits THEN
        RAISE EXCEPTION '% must be positive, got %', arg_name, amount
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF amount > '1000000000'::credits.credits THEN
        RAISE EXCEPTION '% must be at most 1000000000.00, got %', arg_name, amount
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- Raises 22023 unless value is null (when allowed) or 1..max_length characters long.
CREATE FUNCTION credits._require_text(arg_name text, value text, max_length integer,
                                      nullable boolean DEFAULT true) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF value IS NULL THEN
        PERFORM credits._require(arg_name, NOT nullable);
    ELSIF length(value) = 0 OR length(value) > max_length THEN
        RAISE EXCEPTION '% must be 1 to % characters long, got %', arg_name, max_length, length(value)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- Queues one event in the outbox and wakes the listeners of credits_events at commit.
CREATE FUNCTION credits._enqueue_event(project_id bigint, kind text, resource_id text,
                                       transaction_id bigint, payload jsonb) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO credits.events (project_id, kind, resource_id, transaction_id, payload, created_at)
    VALUES (project_id, kind, resource_id, transaction_id, payload, credits.now())
    RETURNING event_id INTO new_id;
    PERFORM pg_notify('credits_events', '');
    RETURN new_id;
END $$;

-- Refuses every change the ledger's rules forbid; called only when the WHEN clause of
-- transactions_guard found one, so legal updates pay no function call.
CREATE FUNCTION credits._transactions_guard() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'credits transactions are never deleted'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RAISE EXCEPTION 'illegal change to % transaction % (% → %)',
        OLD.status, OLD.transaction_id, OLD.status, NEW.status
        USING ERRCODE = 'object_not_in_prerequisite_state',
              DETAIL = 'Completed and failed transactions never change; status moves only '
                       'pending → completed | failed and accumulating → completed; '
                       'project, type, resource and hour never change.';
END $$;

CREATE TRIGGER transactions_guard
    BEFORE UPDATE ON credits.transactions FOR EACH ROW
    WHEN (OLD.status IN ('completed', 'failed')
          OR NEW.project_id <> OLD.project_id
          OR NEW.type <> OLD.type
          OR NEW.resource_id IS DISTINCT FROM OLD.resource_id
          OR NEW.usage_hour IS DISTINCT FROM OLD.usage_hour
          OR (OLD.type <> 'usage' AND NEW.amount <> OLD.amount)
          OR (NEW.status <> OLD.status
              AND NOT (OLD.status = 'pending' AND NEW.status IN ('completed', 'failed'))
              AND NOT (OLD.status = 'accumulating' AND NEW.status = 'completed')))
    EXECUTE FUNCTION credits._transactions_guard();
CREATE TRIGGER transactions_no_delete
    BEFORE DELETE ON credits.transactions FOR EACH ROW
    EXECUTE FUNCTION credits._transactions_guard();
CREATE TRIGGER transactions_no_truncate
    BEFORE TRUNCATE ON credits.transactions FOR EACH STATEMENT
    EXECUTE FUNCTION credits._transactions_guard();

-- The ledger's references, checked once per statement instead of by a foreign key per row (a
-- deduction run inserts a million usage rows, and per-row key checks took 40% of its time):
-- every new transaction's project has an account, and every method named exists for that
-- project.  Accounts and payment methods are never deleted (triggers below), so what holds
-- when a row is inserted holds for good; credits.verify() checks it again.
CREATE FUNCTION credits._transactions_known_references() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.transaction_id, n.project_id, n.method_id,
           NOT EXISTS (SELECT FROM credits.accounts a WHERE a.project_id = n.project_id) AS no_account
      INTO bad
      FROM inserted n
     WHERE NOT EXISTS (SELECT FROM credits.accounts a WHERE a.project_id = n.project_id)
        OR (n.method_id IS NOT NULL
            AND NOT EXISTS (SELECT FROM credits.payment_methods m
                             WHERE m.method_id = n.method_id AND m.project_id = n.project_id))
     LIMIT 1;
    IF FOUND AND bad.no_account THEN
        RAISE EXCEPTION 'a transaction names unknown project %', bad.project_id
            USING ERRCODE = 'foreign_key_violation';
    ELSIF FOUND THEN
        RAISE EXCEPTION 'a transaction names payment method %, which project % does not have',
            bad.method_id, bad.project_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER transactions_known_references
    AFTER INSERT ON credits.transactions REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION credits._transactions_known_references();

-- Refuses to delete accounts and payment methods: the ledger refers to them forever.  The
-- trigger's arguments name the rows and give the hint.
CREATE FUNCTION credits._never_deleted() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credits % are never deleted', TG_ARGV[0]
        USING ERRCODE = 'object_not_in_prerequisite_state',
              DETAIL = 'The ledger refers to them for good.', HINT = TG_ARGV[1];
END $$;

CREATE TRIGGER accounts_no_delete
    BEFORE DELETE ON credits.accounts FOR EACH ROW
    EXECUTE FUNCTION credits._never_deleted('accounts', 'An account with nothing to spend is simply left at zero.');
CREATE TRIGGER accounts_no_truncate
    BEFORE TRUNCATE ON credits.accounts FOR EACH STATEMENT
    EXECUTE FUNCTION credits._never_deleted('accounts', 'An account with nothing to spend is simply left at zero.');
CREATE TRIGGER payment_methods_no_delete
    BEFORE DELETE ON credits.payment_methods FOR EACH ROW
    EXECUTE FUNCTION credits._never_deleted('payment methods', 'Remove one with credits.remove_payment_method(): it is marked removed and kept.');
CREATE TRIGGER payment_methods_no_truncate
    BEFORE TRUNCATE ON credits.payment_methods FOR EACH STATEMENT
    EXECUTE FUNCTION credits._never_deleted('payment methods', 'Remove one with credits.remove_payment_method(): it is marked removed and kept.');
-- ---------------------------------------------------------------------------------------------
-- Accounts and payment methods.  provider_ref is the payment provider's own id (for example a
-- Stripe PaymentMethod id); card numbers never reach the database.
-- ---------------------------------------------------------------------------------------------

-- Opens the project's account at balance zero; does nothing when it is already open.
CREATE FUNCTION credits.open_account(project_id bigint) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
BEGIN
    PERFORM credits._require('project_id', project_id IS NULL);
    INSERT INTO credits.accounts (project_id, opened_at) VALUES (project_id, credits.now())
    ON CONFLICT DO NOTHING;
END $$;

-- Locks the project's account row: payment-method changes of one project run one at a time.
CREATE FUNCTION credits._lock_account(project_id bigint) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM credits._require_account(project_id);
    PERFORM FROM credits.accounts a WHERE a.project_id = _lock_account.project_id FOR UPDATE;
END $$;

-- Raises P0002 unless method_id is an active payment method of the project.
CREATE FUNCTION credits._require_method(project_id bigint, method_id bigint) RETURNS void
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM credits._require('method_id', method_id IS NULL);
    PERFORM FROM credits.payment_methods m
     WHERE m.method_id = _require_method.method_id AND m.project_id = _require_method.project_id
       AND m.removed_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment method % is not an active payment method of project %',
            method_id, project_id USING ERRCODE = 'no_data_found';
    END IF;
END $$;

-- Adds a payment method and returns its id.  Adding the same provider_ref again returns the
-- existing method (a retried call creates nothing).  make_default makes it the default.
CREATE FUNCTION credits.add_payment_method(project_id bigint, provider_ref text, label text DEFAULT NULL,
                                           make_default boolean DEFAULT true) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    id bigint;
BEGIN
    PERFORM credits._require_text('provider_ref', provider_ref, 200, nullable => false);
    PERFORM credits._require_text('label', label, 200);
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

-- Makes method_id the project's one default payment method.
CREATE FUNCTION credits.set_default_payment_method(project_id bigint, method_id bigint) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
BEGIN
    PERFORM credits._lock_account(project_id);
    PERFORM credits._require_method(project_id, method_id);
    UPDATE credits.payment_methods m SET is_default = false
     WHERE m.project_id = set_default_payment_method.project_id AND m.is_default
       AND m.method_id <> set_default_payment_method.method_id;
    UPDATE credits.payment_methods m SET is_default = true
     WHERE m.method_id = set_default_payment_method.method_id AND NOT m.is_default;
END $$;

-- Removes a payment method (it stays in history).  A removed default leaves the project with
-- no default.  Refused while enabled auto-recharge charges this method: the one configured,
-- or the default one when none is configured (else it would silently stop recharging).
CREATE FUNCTION credits.remove_payment_method(project_id bigint, method_id bigint) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
BEGIN
    PERFORM credits._lock_account(project_id);
    PERFORM credits._require_method(project_id, method_id);
    PERFORM FROM credits.auto_recharge r
     WHERE r.project_id = remove_payment_method.project_id AND r.enabled
       AND (r.method_id = remove_payment_method.method_id
            OR r.method_id IS NULL AND EXISTS (SELECT FROM credits.payment_methods m
                                                WHERE m.method_id = remove_payment_method.method_id
                                                  AND m.is_default));
    IF FOUND THEN
        RAISE EXCEPTION 'payment method % is used by auto-recharge', method_id
            USING ERRCODE = 'object_in_use',
                  HINT = 'Make another method the default, configure auto-recharge with another '
                         'method, or disable it, first.';
    END IF;
    UPDATE credits.payment_methods m SET removed_at = credits.now(), is_default = false
     WHERE m.method_id = remove_payment_method.method_id;
END $$;
-- ---------------------------------------------------------------------------------------------
-- Deposits: pending → completed (the balance rises in the same transaction) | failed.
-- add_credits writes the pending deposit and its charge_requested event together; a payment
-- worker claims the event, charges the provider and calls complete_deposit or fail_deposit.
-- ---------------------------------------------------------------------------------------------

-- Writes a pending deposit (or auto-recharge) of amount on method_id and queues its
-- charge_requested event.  Returns the transaction id, or null when the idempotency key is
-- already taken (the caller then looks the key up).
CREATE FUNCTION credits._request_charge(project_id bigint, type credits.transaction_type,
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
            CASE type WHEN 'deposit' THEN 'Deposit' ELSE 'Auto-recharge' END
                || coalesce(' (' || method.label || ')', ''),
            method_id, idempotency_key)
    ON CONFLICT DO NOTHING
    RETURNING t.transaction_id INTO new_id;
    IF new_id IS NOT NULL THEN
        PERFORM credits._enqueue_event(project_id, 'charge_requested', NULL, new_id,
            jsonb_build_object('transaction_id', new_id, 'type', type, 'amount', amount::text,
                               'method_id', method_id, 'provider_ref', method.provider_ref,
                               'idempotency_key', idempotency_key));
    END IF;
    RETURN new_id;
END $$;

-- The deposit an earlier add_credits made with this idempotency key, if any; raises when
-- that call had other arguments.
CREATE FUNCTION credits._deposit_by_key(project_id bigint, amount credits.credits, method_id bigint,
                                        idempotency_key text) RETURNS bigint
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    earlier credits.transactions;
BEGIN
    SELECT * INTO earlier FROM credits.transactions t
     WHERE t.project_id = _deposit_by_key.project_id AND t.idempotency_key = _deposit_by_key.idempotency_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF earlier.type <> 'deposit' OR earlier.amount <> amount
       OR (method_id IS NOT NULL AND earlier.method_id <> method_id) THEN
        RAISE EXCEPTION 'idempotency key "%" was already used with other arguments', idempotency_key
            USING ERRCODE = 'unique_violation',
                  DETAIL = format('Transaction %s is a %s of %s on method %s.', earlier.transaction_id,
                                  earlier.type, earlier.amount, earlier.method_id);
    END IF;
    RETURN earlier.transaction_id;
END $$;

-- Records a pending deposit on the given or the default payment method and queues
-- charge_requested.  The same idempotency key with the same arguments returns the first
-- transaction id and writes nothing.
CREATE FUNCTION credits.add_credits(project_id bigint, amount credits.credits, method_id bigint DEFAULT NULL,
                                    idempotency_key text DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    minimum credits.credits := credits.minimum_deposit();
    id bigint;
BEGIN
    PERFORM credits._require_account(project_id);
    PERFORM credits._require_positive('amount', amount);
    PERFORM credits._require_text('idempotency_key', idempotency_key, 200);

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

-- Explains why a pending deposit could not be found: unknown, wrong project, or finished.
CREATE FUNCTION credits._raise_not_pending(project_id bigint, transaction_id bigint, verb text) RETURNS void
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    t credits.transactions;
BEGIN
    SELECT * INTO t FROM credits.transactions x
     WHERE x.transaction_id = _raise_not_pending.transaction_id AND x.type <> 'usage';
    IF NOT FOUND OR t.project_id <> project_id THEN
        RAISE EXCEPTION 'project % has no deposit %', project_id, transaction_id
            USING ERRCODE = 'no_data_found';
    END IF;
    RAISE EXCEPTION 'cannot % deposit %: it is %', verb, transaction_id, t.status
        USING ERRCODE = 'object_not_in_prerequisite_state',
              DETAIL = 'Only pending deposits can be completed or failed.';
END $$;

-- pending → completed: raises the balance by the deposit in the same transaction and returns
-- the new balance.  A completed deposit re-arms auto-recharge.
CREATE FUNCTION credits.complete_deposit(project_id bigint, transaction_id bigint,
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
    RETURN new_balance;
END $$;

-- pending → failed, with the provider's reason.  A failed auto-recharge disarms auto-recharge
-- until a deposit completes or the settings are saved again.
CREATE FUNCTION credits.fail_deposit(project_id bigint, transaction_id bigint, reason text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    failed_type credits.transaction_type;
BEGIN
    PERFORM credits._require('project_id', project_id IS NULL);
    PERFORM credits._require('transaction_id', transaction_id IS NULL);
    PERFORM credits._require_text('reason', reason, 2000);

    UPDATE credits.transactions t
       SET status = 'failed', failed_at = credits.now(), failure_reason = fail_deposit.reason
     WHERE t.transaction_id = fail_deposit.transaction_id AND t.project_id = fail_deposit.project_id
       AND t.type <> 'usage' AND t.status = 'pending'
    RETURNING t.type INTO failed_type;
    IF NOT FOUND THEN
        PERFORM credits._raise_not_pending(project_id, transaction_id, 'fail');
    END IF;
    IF failed_type = 'auto_recharge' THEN
        UPDATE credits.auto_recharge r SET armed = false WHERE r.project_id = fail_deposit.project_id;
    END IF;
END $$;
-- ---------------------------------------------------------------------------------------------
-- The events outbox, read by workers: each unacknowledged event goes to one worker at a time
-- (FOR UPDATE SKIP LOCKED) for credits.event_lease (default 5 minutes); an event claimed and
-- not acknowledged in that time is handed out again, so a worker that dies loses nothing.
-- ---------------------------------------------------------------------------------------------

-- Hands up to max_events unacknowledged, unleased events to the caller, oldest first.
CREATE FUNCTION credits.claim_events(max_events integer DEFAULT 100) RETURNS SETOF credits.events
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    claim_time timestamptz := credits.now();
BEGIN
    PERFORM credits._require('max_events', max_events IS NULL);
    IF max_events NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'max_events must be between 1 and 10000, got %', max_events
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    WITH claimable AS (
        SELECT e.event_id FROM credits.events e
         WHERE e.acked_at IS NULL AND (e.claimed_until IS NULL OR e.claimed_until <= claim_time)
         ORDER BY e.event_id
         LIMIT max_events
         FOR UPDATE SKIP LOCKED)
    UPDATE credits.events e
       SET claimed_until = claim_time + credits.event_lease(), claims = e.claims + 1
      FROM claimable c
     WHERE e.event_id = c.event_id
    RETURNING e.*;
END $$;

-- Marks a claimed event as done.  Acknowledging it again does nothing.
CREATE FUNCTION credits.ack_event(event_id bigint) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    e credits.events;
BEGIN
    PERFORM credits._require('event_id', event_id IS NULL);
    SELECT * INTO e FROM credits.events x WHERE x.event_id = ack_event.event_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown event %', event_id USING ERRCODE = 'no_data_found';
    ELSIF e.claims = 0 THEN
        RAISE EXCEPTION 'event % was never claimed', event_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Claim events with credits.claim_events() before acknowledging them.';
    ELSIF e.acked_at IS NULL THEN
        UPDATE credits.events x SET acked_at = credits.now() WHERE x.event_id = ack_event.event_id;
    END IF;
END $$;
-- ---------------------------------------------------------------------------------------------
-- Metered resources and API usage.
--
-- Two clocks say which billable time is already in usage transactions:
--   * accounts.deducted_until, per project: every hour before it has been deducted
--     (run_hourly_deductions moves it to the current hour, in the update that debits the account);
--   * resources.accrued_until, per resource: set while an instance runs or a volume is
--     accessible (null otherwise) to where its own booking got to (start, restart, rate change).
-- A billing resource's time before greatest(accrued_until, deducted_until) is booked; the time
-- after it accrues "live".  Booking happens when a resource stops, changes rate or is cut off,
-- and for every billing resource at the hour boundary, when run_hourly_deductions writes each
-- ended hour once, completed, and moves each project's clock instead of a million resources'.
--
-- API usage is appended to usage_events by record_usage (no shared row is updated per call),
-- folded every minute into usage_rollup (one row per project, product and hour), and written
-- into its usage transaction, completed, by the deduction of its hour (src/deduction.c).
-- ---------------------------------------------------------------------------------------------

CREATE TABLE credits.resources (
    project_id    bigint NOT NULL REFERENCES credits.accounts,
    resource_id   text NOT NULL CHECK (length(resource_id) BETWEEN 1 AND 200),
    kind          text NOT NULL CHECK (kind IN ('instance', 'volume')),
    state         text NOT NULL,
    rate_per_hour credits.credits NOT NULL CHECK (rate_per_hour > '0'::credits.credits),
    state_since   timestamptz NOT NULL,
    accrued_until timestamptz,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (project_id, resource_id),
    CONSTRAINT state_of_kind CHECK (
        kind = 'instance' AND state IN ('running', 'stopped', 'terminated')
        OR kind = 'volume' AND state IN ('available', 'inaccessible', 'deleted')),
    CONSTRAINT billing_clock_while_billable CHECK (
        (accrued_until IS NOT NULL) = (state IN ('running', 'available')))
);
-- The billing resources in project order, with all the hourly run reads of them: it finds
-- the due projects and streams their resources from this index alone (12% less CPU per run
-- than reading the rows).
CREATE INDEX resources_billing ON credits.resources (project_id)
    INCLUDE (resource_id, kind, rate_per_hour, accrued_until) WHERE accrued_until IS NOT NULL;

-- Recorded API usage not yet folded into its usage transaction.  Append-only between folds.
CREATE TABLE credits.usage_events (
    project_id  bigint NOT NULL,
    resource_id text NOT NULL,
    usage_hour  timestamptz NOT NULL,
    amount      credits.credits NOT NULL CHECK (amount > '0'::credits.credits)
);
-- (Without deduplication: one busy project's calls all carry the same key, and merging them
-- into posting lists each time a page fills cost record_usage about a tenth of its
-- throughput at 32 clients, in 7 of 10 paired runs of test/bench/usage_index_bench.sh.  The
-- rows live a minute, until the next fold, so posting lists would save little space.)
CREATE INDEX usage_events_project ON credits.usage_events (project_id) WITH (deduplicate_items = off);

-- The folded API usage of each (project, product, hour) not deducted yet, in rate-microseconds
-- (src/usage_math.c: an amount a is a * 3.6e9).  Every minute's fold adds to these rows; on
-- half-empty pages, with only the key indexed, each addition is a heap-only update of a small
-- table.  (Folded into accumulating usage transactions instead, every API hour's row in that
-- table of millions was rewritten every minute, with new entries in its indexes, almost none
-- heap-only, and completed by one more UPDATE: test/bench/api_hours_bench.sh.)
CREATE TABLE credits.usage_rollup (
    project_id  bigint NOT NULL,
    resource_id text NOT NULL,
    usage_hour  timestamptz NOT NULL,
    units       numeric NOT NULL CHECK (units > 0),
    PRIMARY KEY (project_id, usage_hour, resource_id)
) WITH (fillfactor = 50);

-- Idempotency keys of record_usage: a key is counted once, forever.
CREATE TABLE credits.usage_keys (
    project_id      bigint NOT NULL,
    idempotency_key text NOT NULL,
    resource_id     text NOT NULL,
    amount          credits.credits NOT NULL,
    recorded_at     timestamptz NOT NULL,
    PRIMARY KEY (project_id, idempotency_key)
);

-- Auto-recharge settings.  armed is cleared by a failed auto-recharge and set again by a
-- completed deposit or by saving the settings.
CREATE TABLE credits.auto_recharge (
    project_id bigint PRIMARY KEY REFERENCES credits.accounts,
    enabled    boolean NOT NULL,
    threshold  credits.credits NOT NULL CHECK (threshold >= '0'::credits.credits),
    amount     credits.credits NOT NULL CHECK (amount > '0'::credits.credits),
    method_id  bigint REFERENCES credits.payment_methods,
    armed      boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL
);
-- ---------------------------------------------------------------------------------------------
-- Booking usage into usage transactions, and reading what has accrued so far.
-- ---------------------------------------------------------------------------------------------

-- The description of a usage transaction.
CREATE FUNCTION credits._describe(kind text, resource_id text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE kind WHEN 'instance' THEN 'Instance ' WHEN 'volume' THEN 'Volume ' ELSE 'API usage ' END
           || resource_id;

-- The end of the project's last deducted hour: its billable time before it is in completed
-- usage transactions (-infinity before its first deduction).
CREATE FUNCTION credits._deducted_until(project_id bigint) RETURNS timestamptz
    LANGUAGE sql STABLE
    RETURN (SELECT a.deducted_until FROM credits.accounts a WHERE a.project_id = _deducted_until.project_id);

-- Books what a resource billed at rate accrued over [from_ts, upto) into the usage
-- transactions of the hours it touches (creating them as accumulating).  Time before the last
-- deducted hour's end is never booked again: it is in completed hours already, whatever
-- from_ts says (see credits._billing_start for the one way it can).
CREATE FUNCTION credits._book_usage(project_id bigint, kind text, resource_id text,
                                    rate_per_hour credits.credits, from_ts timestamptz, upto timestamptz)
    RETURNS void LANGUAGE sql AS $$
    INSERT INTO credits.transactions AS t (project_id, type, status, amount, created_at, description,
                                           resource_id, usage_hour, accrued_units)
    SELECT project_id, 'usage', 'accumulating', -credits._accrued_amount(s.units), s.usage_hour,
           credits._describe(kind, resource_id), resource_id, s.usage_hour, s.units
      FROM credits._hour_segments(rate_per_hour, greatest(from_ts, credits._deducted_until(project_id)), upto) AS s
    ON CONFLICT (project_id, usage_hour, resource_id) WHERE type = 'usage' DO UPDATE
       SET accrued_units = t.accrued_units + excluded.accrued_units,
           amount = -credits._accrued_amount(t.accrued_units + excluded.accrued_units);
$$;

-- Where a resource's billing clock starts when it starts billing at time at: at, or the end
-- of the last deducted hour when the caller's transaction began before a deduction that has
-- committed since (those seconds, at most the length of that race, go unbilled rather than
-- reopen a completed hour).
CREATE FUNCTION credits._billing_start(project_id bigint, at timestamptz) RETURNS timestamptz
    LANGUAGE sql STABLE
    RETURN greatest(at, credits._deducted_until(project_id));

-- Moves every recorded API usage event into its hour's roll-up row.  An event whose hour was
-- already deducted (its call committed after the deduction) goes to the current hour instead:
-- nothing is lost and no completed hour changes.  The events are summed per (project,
-- product, hour) before that test, so it probes the usage index once per group (tested per
-- call, a fold of 200,000 calls of 10 projects took 1.1-2.3x as long).  Callers hold the
-- periodic-run lock.
CREATE FUNCTION credits._fold_usage_events(at timestamptz) RETURNS bigint
    LANGUAGE sql AS $$
    WITH moved AS (
        DELETE FROM credits.usage_events RETURNING project_id, resource_id, usage_hour, amount),
    by_hour AS (
        SELECT m.project_id, m.resource_id, m.usage_hour, credits._units_sum(m.amount) AS units, count(*) AS n
          FROM moved m GROUP BY m.project_id, m.resource_id, m.usage_hour),
    targeted AS (
        SELECT b.project_id, b.resource_id, b.units, b.n,
               CASE WHEN EXISTS (SELECT FROM credits.transactions t
                                  WHERE t.project_id = b.project_id AND t.resource_id = b.resource_id
                                    AND t.usage_hour = b.usage_hour AND t.type = 'usage'
                                    AND t.status = 'completed')
                    THEN credits.hour_of(at) ELSE b.usage_hour END AS usage_hour
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

-- Usage not yet deducted, one row per (project, resource, hour), as of credits.now(): stored
-- accumulating transactions plus what accrued since (live resource time, API usage rolled up
-- or not yet folded).  transaction_id is null for an hour that has no stored row yet.  A
-- filter on project_id is pushed down to each branch, so one project's rows are read through
-- its indexes.
CREATE VIEW credits.usage_in_progress AS
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
        -- (events of an hour already deducted show in the current hour, where the fold puts them)
        SELECT e.project_id, NULL, e.resource_id,
               CASE WHEN EXISTS (SELECT FROM credits.transactions t
                                  WHERE t.project_id = e.project_id AND t.resource_id = e.resource_id
                                    AND t.usage_hour = e.usage_hour AND t.type = 'usage'
                                    AND t.status = 'completed')
                    THEN credits.hour_of(credits.now()) ELSE e.usage_hour END,
               credits._describe('api', e.resource_id), credits._units_sum(e.amount)
          FROM credits.usage_events e
         GROUP BY e.project_id, e.resource_id, e.usage_hour) AS x
 GROUP BY x.project_id, x.resource_id, x.usage_hour;

-- Usage accrued and not yet deducted, in total, for one project as of credits.now().
-- (BEGIN ATOMIC: bound at install time, so the credits operators and sum() resolve whatever
-- the caller's search_path; balance_overview calls it directly.)
CREATE FUNCTION credits._accumulating(project_id bigint) RETURNS credits.credits
    LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT coalesce(-credits._usage_total(u.amount), '0') FROM credits.usage_in_progress u
     WHERE u.project_id = _accumulating.project_id;
END;

-- balance − accumulating, never below zero: what the project can still spend.  An unknown
-- project raises P0002 (and a null one 22004) rather than answering null.
CREATE FUNCTION credits.available_balance(project_id bigint) RETURNS credits.credits
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
    SELECT greatest(a.balance - credits._accumulating(a.project_id), '0')
      FROM credits.accounts a
     WHERE a.project_id = (SELECT credits._require_account(available_balance.project_id));
$$;
-- ---------------------------------------------------------------------------------------------
-- Instances (running | stopped | terminated) and volumes (available | inaccessible | deleted).
-- An instance is charged for every microsecond it runs, a volume for every microsecond it is
-- accessible, at rate_per_hour, split at UTC hour boundaries.
-- ---------------------------------------------------------------------------------------------

-- Raises unless the project may start something: not cut off and a positive available balance.
-- Takes a share lock on the account so that a concurrent cut-off waits for this transaction
-- and then sees (and terminates) what it started.
CREATE FUNCTION credits._require_available_balance(project_id bigint) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    is_depleted boolean;
BEGIN
    SELECT a.depleted INTO is_depleted FROM credits.accounts a
     WHERE a.project_id = _require_available_balance.project_id FOR SHARE;
    IF is_depleted OR credits.available_balance(project_id) <= '0'::credits.credits THEN
        RAISE EXCEPTION 'project % has no available balance', project_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Add credits with credits.add_credits() first.';
    END IF;
END $$;

-- Starts billing a resource (start_instance, attach_volume): creates it, restarts a stopped
-- instance, or changes the rate of one already billing (the time so far is booked at the old
-- rate).  Calling it again with the same rate does nothing.
CREATE FUNCTION credits._activate(project_id bigint, resource_id text, kind text,
                                  rate_per_hour credits.credits) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    active_state text := CASE kind WHEN 'instance' THEN 'running' ELSE 'available' END;
    at timestamptz := credits.now();
    r credits.resources;
BEGIN
    PERFORM credits._require_account(project_id);
    PERFORM credits._require_text('resource_id', resource_id, 200, nullable => false);
    PERFORM credits._require_positive('rate_per_hour', rate_per_hour);
    -- The account first, then the resource: the order every path locks them in (the periodic
    -- runs, the cut-off and the volume restore of a deposit), so none can deadlock with another.
    PERFORM credits._require_available_balance(project_id);
    SELECT * INTO r FROM credits.resources x
     WHERE x.project_id = _activate.project_id AND x.resource_id = _activate.resource_id FOR UPDATE;

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

-- Stops billing a resource (stop_instance, delete_volume): books its time up to now and moves
-- it to final_state.  Does nothing when it is not billing and already at rest.
CREATE FUNCTION credits._deactivate(project_id bigint, resource_id text, kind text, final_state text)
    RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    at timestamptz := credits.now();
    r credits.resources;
BEGIN
    PERFORM credits._require_account(project_id);
    PERFORM credits._require_text('resource_id', resource_id, 200, nullable => false);
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

-- Starts (or restarts) an instance billed at rate_per_hour.
CREATE FUNCTION credits.start_instance(project_id bigint, resource_id text, rate_per_hour credits.credits)
    RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
    RETURN credits._activate(project_id, resource_id, 'instance', rate_per_hour);

-- Stops a running instance; a stopped one may be started again.
CREATE FUNCTION credits.stop_instance(project_id bigint, resource_id text)
    RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
    RETURN credits._deactivate(project_id, resource_id, 'instance', 'stopped');

-- Attaches a volume billed at rate_per_hour while it is accessible.
CREATE FUNCTION credits.attach_volume(project_id bigint, resource_id text, rate_per_hour credits.credits)
    RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
    RETURN credits._activate(project_id, resource_id, 'volume', rate_per_hour);

-- Deletes a volume; its id cannot be used again.
CREATE FUNCTION credits.delete_volume(project_id bigint, resource_id text)
    RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
    RETURN credits._deactivate(project_id, resource_id, 'volume', 'deleted');
-- ---------------------------------------------------------------------------------------------
-- API usage: the per-request path.  Each call appends one row to usage_events (and, with an
-- idempotency key, one to usage_keys); no shared row is updated, so one project can take
-- thousands of calls per second.  The periodic runs fold the events into usage transactions.
-- ---------------------------------------------------------------------------------------------

-- Raises 23505 unless the earlier use of an idempotency key recorded the same resource and amount.
CREATE FUNCTION credits._require_same_usage(project_id bigint, idempotency_key text, resource_id text,
                                            amount credits.credits) RETURNS void
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    earlier credits.usage_keys;
BEGIN
    SELECT * INTO STRICT earlier FROM credits.usage_keys k
     WHERE k.project_id = _require_same_usage.project_id AND k.idempotency_key = _require_same_usage.idempotency_key;
    IF earlier.resource_id <> resource_id OR earlier.amount <> amount THEN
        RAISE EXCEPTION 'idempotency key "%" was already used with other arguments', idempotency_key
            USING ERRCODE = 'unique_violation',
                  DETAIL = format('It recorded %s on %s.', earlier.amount, earlier.resource_id);
    END IF;
END $$;

-- record_usage in full: the keyed calls, and the argument errors.  credits.record_usage (C,
-- below) appends the plain calls itself and hands every other call to this function.
CREATE FUNCTION credits._record_usage(project_id bigint, resource_id text, amount credits.credits,
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
    IF resource_id IS NULL OR length(resource_id) NOT BETWEEN 1 AND 200 THEN
        PERFORM credits._require_text('resource_id', resource_id, 200, nullable => false);
    END IF;
    IF amount IS NULL OR amount <= '0'::credits.credits OR amount > '1000000000'::credits.credits THEN
        PERFORM credits._require_positive('amount', amount);
    END IF;
    IF idempotency_key IS NOT NULL THEN
        IF length(idempotency_key) NOT BETWEEN 1 AND 200 THEN
            PERFORM credits._require_text('idempotency_key', idempotency_key, 200);
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

-- Records amount of API usage of resource_id (the metered product, e.g. 'api:chat') in the
-- current hour.  A repeated idempotency key with the same arguments is counted once.  In C
-- (src/usage_record.c): a call without a key is one probe of the accounts and one appended
-- row; the rest goes to credits._record_usage.  Not SECURITY DEFINER: it writes without
-- privilege checks, so its EXECUTE grant (credits_app) is the gate.
CREATE FUNCTION credits.record_usage(project_id bigint, resource_id text, amount credits.credits,
                                     idempotency_key text DEFAULT NULL) RETURNS void
    AS 'MODULE_PATHNAME', 'credits_record_usage' LANGUAGE C VOLATILE;

-- Records many usages at once: element i of each array is one record_usage call.  All or
-- nothing: one bad element refuses the whole batch.  Returns the elements taken (repeated
-- keys are not counted again).
CREATE FUNCTION credits.record_usage_batch(project_ids bigint[], resource_ids text[], amounts credits.credits[],
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
        OR length(u.resource_id) NOT BETWEEN 1 AND 200 OR u.amount <= '0'::credits.credits
        OR u.amount > '1000000000'::credits.credits
        OR length(u.idempotency_key) NOT BETWEEN 1 AND 200
     ORDER BY u.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'element % of the batch is invalid', bad.ord
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Project %s, resource %s, amount %s, key %s: every element needs a project, '
                                  'a resource id and key of 1 to 200 characters and a positive amount '
                                  'of at most 1000000000.00.',
                                  bad.project_id, bad.resource_id, bad.amount, bad.idempotency_key);
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
-- Zero balance (src/zero_balance.c decides; these functions carry it out).
-- When a project's balance reaches zero, or accrued usage uses up its available balance, in
-- the same transaction: running instances are terminated, available volumes become
-- inaccessible, and instance_terminated / volume_inaccessible / balance_depleted (once per
-- depletion) are queued.  A deposit that makes the available balance positive again makes the
-- volumes available again (volume_available queued); terminated instances stay terminated.
-- ---------------------------------------------------------------------------------------------

-- Cuts a project off at time at: books every billing resource's time up to at, terminates
-- instances, locks volumes, queues the events.
CREATE FUNCTION credits._cut_off(project_id bigint, at timestamptz) RETURNS void
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
            jsonb_build_object('resource_id', r.resource_id, 'kind', r.kind, 'at', at));
    END LOOP;
    SELECT a.balance INTO balance FROM credits.accounts a WHERE a.project_id = _cut_off.project_id;
    PERFORM credits._enqueue_event(project_id, 'balance_depleted', NULL, NULL,
        jsonb_build_object('balance', balance::text, 'at', at));
END $$;

-- Makes a project's inaccessible volumes available again at time at and queues the events.
CREATE FUNCTION credits._restore_volumes(project_id bigint, at timestamptz) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    r credits.resources;
BEGIN
    FOR r IN SELECT * FROM credits.resources x
              WHERE x.project_id = _restore_volumes.project_id AND x.state = 'inaccessible'
              ORDER BY x.resource_id FOR UPDATE
    LOOP
        UPDATE credits.resources x
           SET state = 'available', state_since = at,
               accrued_until = credits._billing_start(_restore_volumes.project_id, at)
         WHERE x.project_id = _restore_volumes.project_id AND x.resource_id = r.resource_id;
        PERFORM credits._enqueue_event(project_id, 'volume_available', r.resource_id, NULL,
            jsonb_build_object('resource_id', r.resource_id, 'kind', r.kind, 'at', at));
    END LOOP;
END $$;

CREATE FUNCTION credits._zero_balance_trigger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'credits_zero_balance' LANGUAGE C;

CREATE TRIGGER zero_balance_decide
    BEFORE UPDATE OF balance, depleted ON credits.accounts FOR EACH ROW
    WHEN ((NEW.balance = '0'::credits.credits AND OLD.balance > '0'::credits.credits AND NOT NEW.depleted)
          OR (NEW.depleted AND NEW.balance > OLD.balance))
    EXECUTE FUNCTION credits._zero_balance_trigger();

CREATE TRIGGER zero_balance_enforce
    AFTER UPDATE OF balance, depleted ON credits.accounts FOR EACH ROW
    WHEN (OLD.depleted IS DISTINCT FROM NEW.depleted)
    EXECUTE FUNCTION credits._zero_balance_trigger();
-- ---------------------------------------------------------------------------------------------
-- The periodic work: hourly deductions and the minute's balance checks.  pg_cron never replays
-- runs missed while the server was down, so each run catches up by itself, and each is safe to
-- call at any time, any number of times, concurrently: runs take one advisory lock and wait
-- for each other, and every (resource, hour) is completed and deducted exactly once (its row
-- is unique, and a project's hours before accounts.deducted_until are never booked again).
-- ---------------------------------------------------------------------------------------------

-- Waits for any other periodic run of this database to finish.
CREATE FUNCTION credits._lock_periodic_runs() RETURNS void
    LANGUAGE sql AS $$ SELECT pg_advisory_xact_lock(hashtext('credits periodic run')::bigint << 32) $$;

-- Deducts every usage hour before cur, oldest first per project, each written once, and
-- debits the accounts (src/deduction.c, which says how).  Returns the number of usage
-- transactions completed.  The caller holds the periodic-run lock.
CREATE FUNCTION credits._deduct_ended_hours(cur timestamptz, at timestamptz) RETURNS bigint
    AS 'MODULE_PATHNAME', 'credits_deduct_ended_hours' LANGUAGE C STRICT;

-- Completes and deducts every usage hour that has ended and is not yet deducted, oldest first,
-- and starts the auto-recharges that the new balances call for.  Returns the number of usage
-- transactions completed.
-- (jit = off in both periodic runs: the row estimates of the hour segments are far too high,
-- and compiling the plans cost more than running them, about 1 s per run at 100,000 projects.)
CREATE FUNCTION credits.run_hourly_deductions() RETURNS bigint
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
    completed := credits._deduct_ended_hours(cur, at);
    -- (the accrued usage of every project is worth computing only when one may recharge)
    IF EXISTS (SELECT FROM credits.auto_recharge r WHERE r.enabled AND r.armed) THEN
        SELECT * INTO due FROM credits._due_projects();
        PERFORM credits._start_auto_recharges(due.recharge_ids, due.recharge_accrued);
    END IF;
    RETURN completed;
END $$;

-- Usage not yet deducted, in total per project with any, as of credits.now().
CREATE VIEW credits.accumulating_by_project AS
SELECT u.project_id, -credits._usage_total(u.amount) AS accumulating
  FROM credits.usage_in_progress u GROUP BY u.project_id;

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
               p.recharging AND greatest(p.balance - p.accrued, '0'::credits.credits) < p.threshold AS recharge
          FROM positions p)
    SELECT coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.used_up), '{}'),
           coalesce(array_agg(f.accrued ORDER BY f.project_id) FILTER (WHERE f.used_up), '{}'),
           coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.recharge), '{}'),
           coalesce(array_agg(f.accrued ORDER BY f.project_id) FILTER (WHERE f.recharge), '{}')
      FROM flagged f;
END;

-- Cuts off every project whose accrued usage has used up its available balance (the balance
-- itself is still positive: deductions cut off the ones that reach zero), then starts the
-- auto-recharges that are due.  Returns the number of projects acted on (cut off, or
-- recharge requested, or both).
CREATE FUNCTION credits.run_balance_checks() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp SET jit = off AS $$
DECLARE
    at timestamptz;
    due record;
    cut_off bigint[];
    recharged bigint[];
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
    RETURN (SELECT count(*) FROM (SELECT unnest(cut_off) UNION SELECT unnest(recharged)) AS acted);
END $$;
-- ---------------------------------------------------------------------------------------------
-- Auto-recharge: when enabled and the available balance is below threshold, a pending
-- auto_recharge deposit of amount is requested (charge_requested queued) from the configured
-- method, or the project's default one.  At most one is pending per project (a unique index).
-- A failed auto-recharge disarms it until a deposit completes or the settings are saved again:
-- a declined card is not charged again every minute.
-- ---------------------------------------------------------------------------------------------

-- Saves the project's auto-recharge settings (and re-arms it).
CREATE FUNCTION credits.configure_auto_recharge(project_id bigint, enabled boolean, threshold credits.credits,
                                                amount credits.credits, method_id bigint DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    minimum credits.credits := credits.minimum_deposit();
BEGIN
    PERFORM credits._lock_account(project_id);
    PERFORM credits._require('enabled', enabled IS NULL);
    PERFORM credits._require('threshold', threshold IS NULL);
    IF threshold < '0'::credits.credits THEN
        RAISE EXCEPTION 'threshold must not be negative, got %', threshold
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM credits._require_positive('amount', amount);
    IF amount < minimum THEN
        RAISE EXCEPTION 'auto-recharge amount % is below the minimum deposit of %', amount, minimum
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF method_id IS NOT NULL THEN
        PERFORM credits._require_method(project_id, method_id);
    ELSIF enabled AND NOT EXISTS (SELECT FROM credits.payment_methods m
                                   WHERE m.project_id = configure_auto_recharge.project_id AND m.is_default) THEN
        RAISE EXCEPTION 'project % has no default payment method to recharge from', project_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Add one with credits.add_payment_method(), or pass method_id.';
    END IF;

    INSERT INTO credits.auto_recharge AS r (project_id, enabled, threshold, amount, method_id, armed, updated_at)
    VALUES (project_id, enabled, threshold, amount, method_id, true, credits.now())
    ON CONFLICT ON CONSTRAINT auto_recharge_pkey DO UPDATE
       SET enabled = excluded.enabled, threshold = excluded.threshold, amount = excluded.amount,
           method_id = excluded.method_id, armed = true, updated_at = excluded.updated_at;
END $$;

-- Requests the auto-recharges that are due now among the candidates given (credits._due_projects
-- finds them): enabled, armed, none pending, a usable method, and an available balance below
-- the threshold, tested again here with the current balance and the candidate's accrued
-- usage.  One set-based insert of the pending auto_recharge transactions and their
-- charge_requested events, shaped as credits._request_charge shapes them; the unique index
-- leaves out a project whose recharge a concurrent run requested first.  Returns the
-- projects for which a recharge was requested.
CREATE FUNCTION credits._start_auto_recharges(candidate_ids bigint[], candidate_accrued credits.credits[])
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
           AND greatest(a.balance - c.accrued, '0'::credits.credits) < r.threshold
           AND NOT EXISTS (SELECT FROM credits.transactions t
                            WHERE t.project_id = r.project_id AND t.type = 'auto_recharge'
                              AND t.status = 'pending')),
    requested AS (
        INSERT INTO credits.transactions AS t (project_id, type, status, amount, created_at, description, method_id)
        SELECT d.project_id, 'auto_recharge', 'pending', d.amount, credits.now(),
               'Auto-recharge' || coalesce(' (' || d.label || ')', ''), d.method_id
          FROM due d ORDER BY d.project_id
        ON CONFLICT DO NOTHING
        RETURNING t.transaction_id, t.project_id, t.amount, t.method_id),
    queued AS (
        INSERT INTO credits.events (project_id, kind, resource_id, transaction_id, payload, created_at)
        SELECT q.project_id, 'charge_requested', NULL, q.transaction_id,
               jsonb_build_object('transaction_id', q.transaction_id, 'type', 'auto_recharge',
                                  'amount', q.amount::text, 'method_id', q.method_id,
                                  'provider_ref', d.provider_ref, 'idempotency_key', NULL),
               credits.now()
          FROM requested q JOIN due d ON d.project_id = q.project_id
         ORDER BY q.transaction_id)
    SELECT coalesce(array_agg(q.project_id ORDER BY q.project_id), '{}') INTO requested_ids FROM requested q;

    IF cardinality(requested_ids) > 0 THEN
        PERFORM pg_notify('credits_events', '');
    END IF;
    RETURN requested_ids;
END $$;
-- ---------------------------------------------------------------------------------------------
-- What users read: balances and runway, the transaction history, the resources, and verify().
-- ---------------------------------------------------------------------------------------------

-- Every completed usage transaction, found hour by hour: each project's in its deducted
-- hours, [accounts.deducted_from, accounts.deducted_until), where the deduction that completes
-- them puts them.  Read with a project_id filter, that is one probe of the unique index
-- (usage_hour, project_id, resource_id) per hour of the project's own billing history, about
-- 1 microsecond each, plus its rows; the index is ordered by hour so that the hourly run only
-- appends to it (sql/install/30_ledger_tables.sql).  Read without one (or for a time range),
-- the planner joins the hours in use to the index and hashes the accounts.  (usage_hour is a
-- whole UTC hour: usage_shape.  verify() checks that no completed hour lies outside its
-- project's deducted hours.)
CREATE VIEW credits._completed_usage AS
SELECT t.*
  FROM generate_series((SELECT min(f.usage_hour) FROM credits.transactions f WHERE f.type = 'usage'),
                       (SELECT max(l.usage_hour) FROM credits.transactions l WHERE l.type = 'usage'),
                       interval '1 hour') AS h(usage_hour)
  JOIN credits.accounts a ON h.usage_hour >= a.deducted_from AND h.usage_hour < a.deducted_until
  JOIN credits.transactions t ON t.usage_hour = h.usage_hour AND t.project_id = a.project_id
 WHERE t.type = 'usage' AND t.status = 'completed';

-- burn_rate(amount, per): credits per hour of inputs "amount every per" (src/burn_rate.c).
CREATE FUNCTION credits._burn_rate_accum(credits.credits, credits.credits, interval) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_burn_rate_accum' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits._burn_rate_combine(credits.credits, credits.credits) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_burn_rate_combine' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE AGGREGATE credits.burn_rate(amount credits.credits, per interval) (
    SFUNC = credits._burn_rate_accum, STYPE = credits.credits, INITCOND = '0',
    COMBINEFUNC = credits._burn_rate_combine, PARALLEL = SAFE);

-- What a project consumes per hour, input by input for credits.burn_rate(amount, '1 hour'):
-- the rates of its running instances and accessible volumes, plus its API usage of the last
-- ended hour (deducted or not).  Read it with a project_id filter: it reaches every branch.
CREATE VIEW credits._burn_rate_inputs AS
SELECT r.project_id, r.rate_per_hour AS amount
  FROM credits.resources r
 WHERE r.state IN ('running', 'available')
UNION ALL
SELECT t.project_id, -t.amount
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

-- What a project consumes per hour now.  (BEGIN ATOMIC: bound at install time, whatever the
-- caller's search_path.)  SECURITY DEFINER: readers may not read the tables.
CREATE FUNCTION credits._burn_rate_of(project_id bigint) RETURNS credits.credits
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
BEGIN ATOMIC
    SELECT credits.burn_rate(b.amount, interval '1 hour')
      FROM credits._burn_rate_inputs b WHERE b.project_id = _burn_rate_of.project_id;
END;

-- One row per project: balance, usage accumulating, what is available, burn rate and runway.
-- hours_remaining is rounded to 0.01 h; runs_out_at uses the exact quotient, to the second.
-- The accrued usage and the burn rate are LATERAL subqueries over the views, not calls of
-- credits._accumulating() and credits._burn_rate_of(): a SQL function that cannot be inlined
-- plans its query again on every execution of the outer one (about 10 ms a row here), while
-- this view is planned with the query and a prepared read of one project takes about 0.4 ms.
-- (The view reads the tables with its owner's rights, so readers need no SECURITY DEFINER.)
CREATE VIEW credits.balance_overview AS
SELECT a.project_id,
       a.balance AS current_balance,
       acc.accumulating,
       av.available_balance,
       br.burn_rate,
       CASE WHEN br.burn_rate > '0'::credits.credits
            THEN round(av.available_balance / br.burn_rate, 2) END AS hours_remaining,
       CASE WHEN br.burn_rate > '0'::credits.credits
            THEN date_trunc('second', credits.now() + (av.available_balance / br.burn_rate) * interval '1 hour')
       END AS runs_out_at,
       coalesce(r.enabled, false) AS auto_recharge_enabled
  FROM credits.accounts a
  LEFT JOIN credits.auto_recharge r USING (project_id)
  CROSS JOIN LATERAL (
      SELECT coalesce(-credits._usage_total(u.amount), '0'::credits.credits) AS accumulating
        FROM credits.usage_in_progress u WHERE u.project_id = a.project_id) AS acc
  CROSS JOIN LATERAL (
      SELECT credits.burn_rate(b.amount, interval '1 hour') AS burn_rate
        FROM credits._burn_rate_inputs b WHERE b.project_id = a.project_id) AS br
  CROSS JOIN LATERAL (
      SELECT greatest(a.balance - acc.accumulating, '0'::credits.credits) AS available_balance) AS av;

-- One row per transaction, newest first; usage hours still running show as accumulating
-- (with a null transaction_id while they have no stored row yet).
CREATE VIEW credits.transaction_history AS
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
           u.amount, 'accumulating'::credits.transaction_status, '0'::credits.credits
      FROM credits.usage_in_progress u) AS h
 ORDER BY h.date DESC, h.transaction_id DESC NULLS FIRST;

-- One row per instance or volume ever started or attached.
CREATE VIEW credits.resource_overview AS
SELECT r.project_id, r.resource_id, r.kind, r.state, r.rate_per_hour, r.state_since
  FROM credits.resources r;

-- Every broken invariant, one row each (no rows: all is well).  An unknown project is an
-- error (P0002), not a clean result.  For one project its transactions are read through the
-- indexes (deposits by the history index, usage hour by hour); for all, the whole table.
-- (jit = off: the plan costs the whole-table branches too, and compiling it took about 1 s
-- at 100,000 projects, 500 times the time of checking one project.)
CREATE FUNCTION credits.verify(project_id bigint DEFAULT NULL)
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
          LEFT JOIN (SELECT t.project_id, sum(t.amount + t.uncollected) AS total,
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
        OR (t.type = 'usage' AND t.amount <> -credits._accrued_amount(t.accrued_units))
        OR (t.type = 'usage' AND t.status = 'completed' AND t.usage_hour + interval '1 hour' > t.completed_at)
        OR t.uncollected < '0'::credits.credits OR t.uncollected > greatest(-t.amount, '0'::credits.credits)
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
-- Scheduling the periodic work with pg_cron (optional: detected at run time).  Installing the
-- extension schedules nothing; an administrator calls credits.schedule_jobs().  Jobs run as the
-- role that scheduled them, in a fresh session: the commands are schema-qualified.
-- ---------------------------------------------------------------------------------------------

-- The jobs: name, cron schedule (UTC), command.
CREATE FUNCTION credits._jobs() RETURNS TABLE (job_name text, schedule text, command text)
    LANGUAGE sql IMMUTABLE AS $$
    VALUES ('credits-hourly-deductions', '0 * * * *', 'SELECT credits.run_hourly_deductions()'),
           ('credits-balance-checks',    '* * * * *', 'SELECT credits.run_balance_checks()');
$$;

-- The administrator's cron.schedule_in_database() calls for this database, as one hint.
CREATE FUNCTION credits._schedule_hint() RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT format('Connect to the database where pg_cron is installed (cron.database_name = %s) as a role '
                  'that may run the credits jobs, and run: ',
                  coalesce(nullif(current_setting('cron.database_name', true), ''), 'postgres'))
           || string_agg(format('SELECT cron.schedule_in_database(%L, %L, %L, %L);',
                                j.job_name, j.schedule, j.command, current_database()), ' ')
      FROM credits._jobs() j;
$$;

-- Registers run_hourly_deductions (every hour) and run_balance_checks (every minute) as named
-- pg_cron jobs.  Scheduling again updates them.  Without pg_cron in this database: a notice
-- whose hint gives the exact calls for an administrator.
CREATE FUNCTION credits.schedule_jobs() RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    j record;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE NOTICE 'pg_cron is not installed in database %; nothing was scheduled', current_database()
            USING HINT = credits._schedule_hint();
        RETURN;
    END IF;
    FOR j IN SELECT * FROM credits._jobs() LOOP
        EXECUTE 'SELECT cron.schedule($1, $2, $3)' USING j.job_name, j.schedule, j.command;
    END LOOP;
END $$;

-- Removes the jobs schedule_jobs registered (those that exist).
CREATE FUNCTION credits.unschedule_jobs() RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    j record;
    present boolean;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE NOTICE 'pg_cron is not installed in database %; nothing to unschedule', current_database()
            USING HINT = 'Jobs scheduled with cron.schedule_in_database() are removed with cron.unschedule(job_name) '
                         'in the database where pg_cron is installed.';
        RETURN;
    END IF;
    FOR j IN SELECT * FROM credits._jobs() LOOP
        EXECUTE 'SELECT EXISTS (SELECT FROM cron.job WHERE jobname = $1 AND username = current_user)'
            INTO present USING j.job_name;
        IF present THEN
            EXECUTE 'SELECT cron.unschedule($1)' USING j.job_name;
        END IF;
    END LOOP;
END $$;
-- ---------------------------------------------------------------------------------------------
-- Roles and privileges.  Nobody but the owner writes the tables: every change goes through
-- the SECURITY DEFINER functions (search_path pinned).  The roles are cluster-wide and are
-- created only when missing; DROP EXTENSION leaves them.
--   credits_reader  the views
--   credits_app     resources, usage, deposits, payment methods, auto-recharge settings
--   credits_worker  complete/fail deposits, events, the periodic runs
-- ---------------------------------------------------------------------------------------------

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['credits_reader', 'credits_app', 'credits_worker'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END $$;

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
                                      '_usage_total', '_units_sum',
                                      -- minimum_deposit() reads it: a setting anyone may SHOW
                                      '_minimum_deposit_text')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END $$;

GRANT USAGE ON SCHEMA credits TO credits_reader, credits_app, credits_worker;
GRANT credits_reader TO credits_app, credits_worker;

GRANT SELECT ON credits.balance_overview, credits.transaction_history, credits.resource_overview,
                credits.usage_in_progress, credits.accumulating_by_project TO credits_reader;
GRANT EXECUTE ON FUNCTION credits.verify(bigint), credits.available_balance(bigint),
                          credits._accumulating(bigint), credits._burn_rate_of(bigint) TO credits_reader;

GRANT EXECUTE ON FUNCTION
    credits.open_account(bigint),
    credits.add_payment_method(bigint, text, text, boolean),
    credits.set_default_payment_method(bigint, bigint),
    credits.remove_payment_method(bigint, bigint),
    credits.add_credits(bigint, credits.credits, bigint, text),
    credits.start_instance(bigint, text, credits.credits),
    credits.stop_instance(bigint, text),
    credits.attach_volume(bigint, text, credits.credits),
    credits.delete_volume(bigint, text),
    credits.record_usage(bigint, text, credits.credits, text),
    credits.record_usage_batch(bigint[], text[], credits.credits[], text[]),
    credits.configure_auto_recharge(bigint, boolean, credits.credits, credits.credits, bigint)
  TO credits_app;

GRANT EXECUTE ON FUNCTION
    credits.complete_deposit(bigint, bigint, text),
    credits.fail_deposit(bigint, bigint, text),
    credits.claim_events(integer),
    credits.ack_event(bigint),
    credits.run_hourly_deductions(),
    credits.run_balance_checks()
  TO credits_worker;

-- pg_dump keeps the rows of every table and the position of every sequence.
SELECT pg_catalog.pg_extension_config_dump('credits.accounts', '');
SELECT pg_catalog.pg_extension_config_dump('credits.payment_methods', '');
SELECT pg_catalog.pg_extension_config_dump('credits.payment_methods_method_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('credits.transactions', '');
SELECT pg_catalog.pg_extension_config_dump('credits.transactions_transaction_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('credits.events', '');
SELECT pg_catalog.pg_extension_config_dump('credits.events_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('credits.resources', '');
SELECT pg_catalog.pg_extension_config_dump('credits.usage_events', '');
SELECT pg_catalog.pg_extension_config_dump('credits.usage_rollup', '');
SELECT pg_catalog.pg_extension_config_dump('credits.usage_keys', '');
SELECT pg_catalog.pg_extension_config_dump('credits.auto_recharge', '');
