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
