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
-- Casts.  Numbers become credits implicitly, so that application code can pass
-- its decimal type (sent as numeric) to every function that takes an amount,
-- and balance > 0 resolves; an implicit or assignment conversion that would
-- have to round is refused (22023), only an explicit ::credits rounds.
-- Credits become numeric only on assignment or explicitly, so an expression
-- never leaves the type silently.
-- ---------------------------------------------------------------------------

CREATE FUNCTION credits.credits(numeric) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_from_numeric' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits(numeric, integer, boolean) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_from_numeric_cast' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits(integer) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_from_int4' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.credits(bigint) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_from_int8' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits.numeric(credits.credits) RETURNS numeric
    AS 'MODULE_PATHNAME', 'credits_to_numeric' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE CAST (numeric AS credits.credits)
    WITH FUNCTION credits.credits(numeric, integer, boolean) AS IMPLICIT;
CREATE CAST (integer AS credits.credits)
    WITH FUNCTION credits.credits(integer) AS IMPLICIT;
CREATE CAST (bigint AS credits.credits)
    WITH FUNCTION credits.credits(bigint) AS IMPLICIT;
CREATE CAST (credits.credits AS numeric)
    WITH FUNCTION credits.numeric(credits.credits) AS ASSIGNMENT;
CREATE CAST (credits.credits AS text)
    WITH INOUT AS ASSIGNMENT;

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
