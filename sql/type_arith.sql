-- The credits type: arithmetic, rounding, overflow and casts.
\set ECHO none
\ir test/sql/helpers.sql
\set ECHO all

--
-- Operator resolution: price * 3 and total / 7 need no cast; the result
-- types follow the README.
--
SELECT pg_typeof(c + c) AS plus, pg_typeof(c - c) AS minus, pg_typeof(-c) AS neg,
       pg_typeof(+c) AS pos, pg_typeof(c * 3) AS c_int, pg_typeof(3 * c) AS int_c,
       pg_typeof(c * 3::bigint) AS c_bigint, pg_typeof(3::bigint * c) AS bigint_c,
       pg_typeof(c * 1.5) AS c_numeric, pg_typeof(1.5 * c) AS numeric_c,
       pg_typeof(c / 7) AS c_div_int, pg_typeof(c / 7::bigint) AS c_div_bigint,
       pg_typeof(c / 1.5) AS c_div_numeric, pg_typeof(c / c) AS c_div_c,
       pg_typeof(abs(c)) AS abs
FROM (SELECT '2.50'::credits AS c) s;

SELECT c + c AS plus, c - '0.75'::credits AS minus, -c AS neg, +c AS pos,
       c * 3 AS c_int, 3 * c AS int_c, c * 3::bigint AS c_bigint, 3::bigint * c AS bigint_c,
       c * 1.5 AS c_numeric, 1.5 * c AS numeric_c, c / 7 AS c_div_int,
       c / 7::bigint AS c_div_bigint, c / 1.5 AS c_div_numeric, c / '0.5'::credits AS c_div_c,
       abs(-c) AS abs_neg, abs(c) AS abs_pos
FROM (SELECT '2.50'::credits AS c) s;

--
-- + and -: exact to the last micro-credit; one micro-credit past either end
-- of the range is 22003.
--
SELECT '9223372036854.775806'::credits + '0.000001'::credits AS to_largest,
       '-9223372036854.775807'::credits - '0.000001'::credits AS to_smallest,
       '9223372036854.775807'::credits + '-9223372036854.775808'::credits AS ends_cancel,
       '0.1'::credits + '0.2'::credits = '0.3'::credits AS no_float_drift;
SELECT stmt, pg_temp.fails(stmt) AS result FROM (VALUES
    ($$SELECT '9223372036854.775807'::credits + '0.000001'::credits$$),
    ($$SELECT '-9223372036854.775808'::credits + '-0.000001'::credits$$),
    ($$SELECT '-9223372036854.775808'::credits - '0.000001'::credits$$),
    ($$SELECT '9223372036854.775807'::credits - '-0.000001'::credits$$),
    ($$SELECT '0'::credits - '-9223372036854.775808'::credits$$)) AS v(stmt);

--
-- Unary minus and abs: the smallest value has no positive counterpart.
--
SELECT -'9223372036854.775807'::credits AS neg_largest, -'-9223372036854.775807'::credits AS neg,
       -'0'::credits AS neg_zero, abs('-9223372036854.775807'::credits) AS abs_near_smallest,
       abs('-0.000001'::credits) AS abs_tiny;
SELECT stmt, pg_temp.fails(stmt) AS result FROM (VALUES
    ($$SELECT -'-9223372036854.775808'::credits$$),
    ($$SELECT abs('-9223372036854.775808'::credits)$$)) AS v(stmt);

--
-- * by integers: checked 64-bit products, exact.
--
SELECT '0.000001'::credits * 9223372036854775807 AS to_largest,
       -9223372036854775808 * '0.000001'::credits AS to_smallest,
       '-4611686018427.387904'::credits * 2 AS smallest_by_int,
       '1.25'::credits * -2147483648 AS by_int_min,
       '1.25'::credits * 0 AS by_zero;
SELECT stmt, pg_temp.fails(stmt) AS result FROM (VALUES
    ($$SELECT '9223372036854.775807'::credits * 2$$),
    ($$SELECT 2 * '9223372036854.775807'::credits$$),
    ($$SELECT '-9223372036854.775808'::credits * -1$$),
    ($$SELECT -1 * '-9223372036854.775808'::credits$$),
    ($$SELECT '4611686018427.387904'::credits * 2$$),
    ($$SELECT '0.000002'::credits * 4611686018427387904$$),
    ($$SELECT 4611686018427387904 * '0.000002'::credits$$),
    ($$SELECT '-0.000001'::credits * -9223372036854775808$$),
    ($$SELECT '1'::credits * 9223372036854775807$$)) AS v(stmt);

--
-- * by numeric: the exact product, rounded half to even at the
-- micro-credit; exact ties go to the even neighbour, anything past a tie,
-- however slightly, goes away from it.
--
SELECT c, f, c * f AS product, f * c AS commuted
FROM (VALUES ('0.000001'::credits, 0.5),          -- 0.0000005 -> 0 (even)
             ('0.000003', 0.5),                   -- 0.0000015 -> 0.000002
             ('0.000005', 0.5),                   -- 0.0000025 -> 0.000002
             ('0.000007', 0.5),                   -- 0.0000035 -> 0.000004
             ('-0.000001', 0.5),                  -- -0.0000005 -> 0
             ('-0.000003', 0.5),                  -- -0.0000015 -> -0.000002
             ('-0.000005', 0.5),                  -- -0.0000025 -> -0.000002
             ('0.000003', -0.5),                  -- -0.0000015 -> -0.000002
             ('0.000001', 0.50000000000000000000000000001),  -- just past the tie
             ('0.000001', 0.49999999999999999999999999999),  -- just below it
             ('-0.000001', 0.50000000000000000000000000001),
             ('-0.000001', 0.49999999999999999999999999999),
             ('1', 0.333333333333333333333333333333),
             ('1', 0.6666665),                    -- 0.6666665 -> 0.666666 (even)
             ('1', 0.6666675),                    -- 0.6666675 -> 0.666668 (even)
             ('2.50', 1.5),
             ('100', 0.0000001),
             ('9223372036854.775807', 1.0),
             ('-9223372036854.775808', 1)) AS v(c, f);
SELECT stmt, pg_temp.fails(stmt) AS result FROM (VALUES
    ($$SELECT '9223372036854.775807'::credits * 1.0000001$$),
    ($$SELECT 1.0000001 * '9223372036854.775807'::credits$$),
    ($$SELECT '-9223372036854.775808'::credits * -1.0$$),
    ($$SELECT '1'::credits * 1e30$$),
    ($$SELECT '1'::credits * 'NaN'::numeric$$),
    ($$SELECT '1'::credits * 'Infinity'::numeric$$),
    ($$SELECT '-Infinity'::numeric * '1'::credits$$)) AS v(stmt);
-- products that round right at the ends of the range: an exact tie after an
-- odd count rounds away (out of range), after an even one it stays
SELECT f, pg_temp.fails(format('SELECT %L::credits * %s', '0.000001', f)) AS error,
       CASE WHEN pg_temp.fails(format('SELECT %L::credits * %s', '0.000001', f)) = 'ok'
            THEN '0.000001'::credits * f END AS product
FROM unnest(ARRAY[9223372036854775806.5, 9223372036854775807.4999999999999999,
                  9223372036854775807.5, -9223372036854775807.5,
                  -9223372036854775808.4999999999999999, -9223372036854775808.5,
                  -9223372036854775808.5000000000000001]::numeric[]) AS f;

--
-- / by integers: rounded half to even, with the sign handled symmetrically.
--
SELECT c, d, c / d AS by_int, c / d::bigint AS by_bigint
FROM (VALUES ('0.000001'::credits, 2),      -- 0.0000005 -> 0
             ('0.000003', 2),               -- 0.0000015 -> 0.000002
             ('0.000005', 2),               -- 0.0000025 -> 0.000002
             ('0.000007', 2),               -- 0.0000035 -> 0.000004
             ('-0.000001', 2),
             ('-0.000003', 2),
             ('-0.000005', 2),
             ('0.000005', -2),
             ('-0.000005', -2),
             ('10', 3),                     -- 3.3333333.. -> 3.333333
             ('20', 3),                     -- 6.6666666.. -> 6.666667
             ('-20', 3),
             ('20', -3),
             ('0.000001', 3),               -- below the half -> 0
             ('0.000002', 3),               -- past the half -> 0.000001
             ('100', 7),
             ('9223372036854.775807', 1),
             ('9223372036854.775807', -1),
             ('9223372036854.775807', 2),   -- ...903.5 -> ...904 (even)
             ('-9223372036854.775808', 1),
             ('-9223372036854.775808', 2),
             ('-9223372036854.775808', 2147483647),
             ('0', -5)) AS v(c, d);
SELECT '-9223372036854.775808'::credits / 9223372036854775807 AS smallest_by_bigint_max,
       '-9223372036854.775808'::credits / -9223372036854775808 AS smallest_by_bigint_min,
       '9223372036854.775807'::credits / -9223372036854775808 AS largest_by_bigint_min,
       '4611686018427.387904'::credits / -9223372036854775808 AS half_tie;
SELECT stmt, pg_temp.fails(stmt) AS result FROM (VALUES
    ($$SELECT '-9223372036854.775808'::credits / -1$$),
    ($$SELECT '-9223372036854.775808'::credits / -1::bigint$$),
    ($$SELECT '1'::credits / 0$$),
    ($$SELECT '1'::credits / 0::bigint$$),
    ($$SELECT '0'::credits / 0$$)) AS v(stmt);

--
-- / by numeric: the exact quotient rounded half to even, also for
-- divisors that are not integers.
--
SELECT c, d, c / d AS quotient
FROM (VALUES ('1'::credits, 3.0),           -- 0.3333333.. -> 0.333333
             ('2', 3.0),                    -- 0.6666666.. -> 0.666667
             ('0.000001', 2.0),             -- 0.0000005 -> 0
             ('0.000003', 2.0),             -- 0.0000015 -> 0.000002
             ('0.000001', 0.4),             -- 0.0000025 -> 0.000002
             ('0.000003', 0.4),             -- 0.0000075 -> 0.000008
             ('0.000003', -0.4),            -- -0.0000075 -> -0.000008
             ('-0.000001', 0.4),            -- -0.0000025 -> -0.000002
             ('0.000001', 1.9999999999999999999999999999), -- just past 0.0000005
             ('0.000001', 2.0000000000000000000000000001), -- just below it
             ('1', 0.0000005),
             ('1', 3),
             ('10', 0.3),
             ('9223372036854.775807', 1),
             ('-9223372036854.775808', -2),
             ('1', 1e30)) AS v(c, d);
SELECT stmt, pg_temp.fails(stmt) AS result FROM (VALUES
    ($$SELECT '9223372036854.775807'::credits / 0.5$$),
    ($$SELECT '-9223372036854.775808'::credits / -1.0$$),
    ($$SELECT '1'::credits / 1e-30$$),
    ($$SELECT '1'::credits / 0.0$$),
    ($$SELECT '1'::credits / 0::numeric$$),
    ($$SELECT '1'::credits / 'NaN'::numeric$$),
    ($$SELECT '1'::credits / 'Infinity'::numeric$$)) AS v(stmt);

--
-- credits / credits is a plain ratio, as numeric.
--
SELECT '10'::credits / '4'::credits AS ratio, '1'::credits / '3'::credits AS third,
       '-9223372036854.775808'::credits / '0.000001'::credits AS smallest_in_micro,
       '0.000001'::credits / '-9223372036854.775808'::credits AS tiny;
SELECT pg_temp.fails($$SELECT '1'::credits / '0'::credits$$) AS by_zero_credits;

--
-- Casts: numeric -> credits rounds half to even; NaN and infinities are refused.
--
SELECT n, n::credits AS cast
FROM unnest(ARRAY[5, 0.25, 12.345678, 0.0000005, 0.0000015, 0.0000025, 0.0000035,
                  -0.0000005, -0.0000015, -0.0000025, 0.00000050000000000000000001,
                  -0.00000049999999999999999999, 2.4999995, 1.23456749, 1.23456750,
                  1.23456850, 9223372036854.775807, 9223372036854.7758065,
                  -9223372036854.775808, -9223372036854.7758085,
                  0.000000000000000000000000000001]::numeric[]) AS n;
SELECT stmt, pg_temp.fails(stmt) AS result FROM (VALUES
    ($$SELECT 9223372036854.775808::credits$$),
    ($$SELECT 9223372036854.7758075::credits$$),       -- tie, odd: rounds up, out of range
    ($$SELECT -9223372036854.775809::credits$$),
    ($$SELECT (-9223372036854.7758095)::credits$$),    -- tie, odd: rounds down, out of range
    ($$SELECT 1e20::credits$$),
    ($$SELECT 'NaN'::numeric::credits$$),
    ($$SELECT 'Infinity'::numeric::credits$$),
    ($$SELECT '-Infinity'::numeric::credits$$)) AS v(stmt);

-- integer and bigint -> credits are whole credits.
SELECT 5::credits AS five, (-2147483648)::credits AS int_min, 2147483647::credits AS int_max,
       9223372036854::bigint::credits AS bigint_largest, (-9223372036854)::bigint::credits AS bigint_smallest;
SELECT stmt, pg_temp.fails(stmt) AS result FROM (VALUES
    ($$SELECT 9223372036855::bigint::credits$$),
    ($$SELECT (-9223372036855)::bigint::credits$$),
    ($$SELECT 9223372036854775807::credits$$)) AS v(stmt);

-- credits -> numeric is exact, with the fraction digits the text form shows.
SELECT c, c::numeric AS num, scale(c::numeric) AS scale, c::numeric::credits = c AS round_trip
FROM unnest('{5, 0.25, 12.345678, -0.000001, 0.1, 0.12, 0.123, 1.000010,
              9223372036854.775807, -9223372036854.775808, -9223372036854.7758,
              9223372036854.77, 123456789012.345678}'::credits[]) AS c;

--
-- Numbers become credits implicitly: on INSERT and UPDATE, as function
-- arguments, and in expressions with credits (the result is credits).  An
-- implicit or assignment conversion that would have to round is refused
-- (22023) and writes nothing; only an explicit ::credits rounds.  Credits
-- become numbers only on assignment or with ::, so an expression never
-- leaves the type silently.
--
CREATE TEMP TABLE wallet (id int, amount credits, as_number numeric);
INSERT INTO wallet VALUES (1, 5, NULL), (2, 7::bigint, NULL), (3, 2.5, NULL),
                          (4, 0.0000025::credits, NULL), (5, '1.25', NULL), (6, 0.000001, NULL);
UPDATE wallet SET amount = 3 WHERE id = 1;
UPDATE wallet SET as_number = amount;
SELECT id, amount, as_number FROM wallet ORDER BY id;
SELECT stmt, pg_temp.fails(stmt) AS result FROM (VALUES
    ($$INSERT INTO wallet VALUES (7, 0.0000025, NULL)$$),
    ($$UPDATE wallet SET amount = 1.0000001 WHERE id = 5$$),
    ($$INSERT INTO wallet VALUES (8, 9223372036854.775808, NULL)$$),
    ($$INSERT INTO wallet VALUES (8, 'NaN'::numeric, NULL)$$)) AS v(stmt);
SELECT count(*) AS rows, sum(amount) AS total FROM wallet;   -- nothing written by the refusals
-- (credits * numeric is an operator of its own, rounding its product half to even)
SELECT pg_typeof('5'::credits + 1) AS type, '5'::credits + 1 AS int_plus, 1.5 + '5'::credits AS numeric_plus,
       '5'::credits - 2.5 AS minus_numeric, 7::bigint + '5'::credits AS bigint_plus,
       '5'::credits * 1.0000001 AS times_numeric;
SELECT '5'::credits = 5 AS eq_int, '5'::credits > 0 AS gt_zero, '0.01'::credits > 0.009 AS gt_numeric,
       '5'::credits = 5.000000 AS eq_numeric;
SELECT stmt, pg_temp.fails(stmt) AS result FROM (VALUES
    ($$SELECT '5'::credits + 1.0000001$$),             -- the numeric would have to round
    ($$SELECT '5'::credits > 0.0000001$$),
    ($$SELECT round('5'::credits)$$),
    ($$SELECT sqrt('4'::credits)$$),
    ($$SELECT '5'::credits * 2.0::float8$$),
    ($$SELECT ('5'::credits)::numeric + 1.5 = '6.5'::credits$$),
    ($$INSERT INTO wallet VALUES (9, 1.0::float8, NULL)$$)) AS v(stmt);
-- a function taking credits takes a number (as a driver's Decimal arrives) and an array of them
CREATE FUNCTION pg_temp.double_it(credits) RETURNS credits LANGUAGE sql AS 'SELECT $1 * 2';
CREATE FUNCTION pg_temp.total(credits[]) RETURNS credits LANGUAGE sql AS 'SELECT sum(c) FROM unnest($1) c';
SELECT pg_temp.double_it(2.5) AS numeric_argument, pg_temp.double_it(3) AS integer_argument,
       pg_temp.double_it(2.5::credits) AS with_cast, pg_temp.double_it('2.5') AS with_literal,
       pg_temp.total(ARRAY[1.25, 2.5]::credits[]) AS array_cast;
SELECT pg_temp.total(ARRAY[1.25, 2.5]) AS numeric_array_argument,
       pg_temp.fails($$SELECT pg_temp.double_it(2.5000001)$$) AS rounding_argument,
       pg_temp.fails($$SELECT pg_temp.total(ARRAY[1.25, 2.5000001])$$) AS rounding_array_element;
-- comparisons with untyped literals take them as credits
SELECT '5'::credits > '0' AS gt_literal, '5'::credits = '5.000000' AS eq_literal;

--
-- With credits on the search_path, plain numbers keep PostgreSQL's own
-- arithmetic: numeric with integer or bigint is numeric, with the same value
-- and scale as without credits (these pairs would otherwise be ambiguous).
--
SELECT expr, with_credits, pg_typeof(with_credits) AS type FROM (VALUES
    ('3 * 1.5',        3 * 1.5,        (SELECT 3 OPERATOR(pg_catalog.*) 1.5)),
    ('1.5 * 3',        1.5 * 3,        (SELECT 1.5 OPERATOR(pg_catalog.*) 3)),
    ('7.0 / 2',        7.0 / 2,        (SELECT 7.0 OPERATOR(pg_catalog./) 2)),
    ('7 / 2.0',        7 / 2.0,        (SELECT 7 OPERATOR(pg_catalog./) 2.0)),
    ('10::bigint * 1.5', 10::bigint * 1.5, (SELECT 10::bigint OPERATOR(pg_catalog.*) 1.5)),
    ('1.5 * 10::bigint', 1.5 * 10::bigint, (SELECT 1.5 OPERATOR(pg_catalog.*) 10::bigint)),
    ('1 / 3.0',        1 / 3.0,        (SELECT 1 OPERATOR(pg_catalog./) 3.0)),
    ('2.0 / 3::bigint', 2.0 / 3::bigint, (SELECT 2.0 OPERATOR(pg_catalog./) 3::bigint)),
    ('9::bigint / 4.0', 9::bigint / 4.0, (SELECT 9::bigint OPERATOR(pg_catalog./) 4.0))
) AS v(expr, with_credits, core)
WHERE with_credits::text = core::text;   -- every row shows: same value, same scale
SELECT pg_temp.fails($$SELECT 1.5 / 0$$) AS by_zero, pg_temp.fails($$SELECT 2 / 0.0$$) AS by_zero_numeric;
