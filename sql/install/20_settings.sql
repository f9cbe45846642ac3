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

-- The bounds on what one call may carry, written once in src/credits_limits.h: an id, key or
-- label is 1 to _max_id_chars() characters; an amount or rate at most _max_amount(), so that
-- the sums of a project's hour can never leave the type's range and stop the periodic runs.
CREATE FUNCTION credits._max_id_chars() RETURNS integer
    AS 'MODULE_PATHNAME', 'credits_max_id_chars' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION credits._max_amount() RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_max_amount' LANGUAGE C IMMUTABLE PARALLEL SAFE;

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

-- The UTC hours that [from, upto) touches, with the rate-microseconds accrued in each: the
-- same walk the deduction takes (src/usage_math.c, HourSegmentsNext), so what the accumulating
-- figures show is what the deduction charges.  ROWS 2: an interval not yet booked spans one
-- hour or two, nearly always (a planner that expected a thousand costed every read of the
-- usage in progress far too high, and compiled it with JIT).
CREATE FUNCTION credits._hour_segments(rate_per_hour credits.credits, from_ts timestamptz, upto timestamptz)
    RETURNS TABLE (usage_hour timestamptz, units numeric)
    AS 'MODULE_PATHNAME', 'credits_hour_segments' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE ROWS 2;
