-- The credits type: sum, avg, min and max; exact, parallel, and in windows.
\set ECHO none
\ir test/sql/helpers.sql
\set ECHO all

CREATE TABLE amounts (grp text, c credits);
INSERT INTO amounts VALUES ('a', '1.50'), ('a', '2.25'), ('a', NULL), ('a', '-0.75'),
    ('b', '0.000001'), ('b', '0.000002'),
    ('c', NULL),
    ('d', '9223372036854.775807'), ('d', '-9223372036854.775808');

SELECT pg_typeof(sum(c)) AS sum, pg_typeof(avg(c)) AS avg,
       pg_typeof(min(c)) AS min, pg_typeof(max(c)) AS max FROM amounts;
SELECT grp, sum(c), avg(c), min(c), max(c), count(c) FROM amounts GROUP BY grp ORDER BY grp;
SELECT sum(c), avg(c), min(c), max(c) FROM amounts;

-- no rows, or only NULLs: NULL, as for the built-in types
SELECT sum(c), avg(c), min(c), max(c) FROM amounts WHERE false;
SELECT sum(c), avg(c), min(c), max(c) FROM amounts WHERE grp = 'c';

--
-- avg rounds half to even: exact ties go to the even micro-credit.
--
SELECT label, avg(c) AS avg
FROM (VALUES ('0.0000005 -> 0', '0.000001'::credits), ('0.0000005 -> 0', '0'),
             ('0.0000015 -> 0.000002', '0.000001'), ('0.0000015 -> 0.000002', '0.000002'),
             ('0.0000025 -> 0.000002', '0.000002'), ('0.0000025 -> 0.000002', '0.000003'),
             ('-0.0000005 -> 0', '-0.000001'), ('-0.0000005 -> 0', '0'),
             ('-0.0000015 -> -0.000002', '-0.000001'), ('-0.0000015 -> -0.000002', '-0.000002'),
             ('-0.0000025 -> -0.000002', '-0.000002'), ('-0.0000025 -> -0.000002', '-0.000003'),
             ('4/3 -> 1.333333', '1'), ('4/3 -> 1.333333', '1'), ('4/3 -> 1.333333', '2'),
             ('5/3 -> 1.666667', '1'), ('5/3 -> 1.666667', '2'), ('5/3 -> 1.666667', '2'),
             ('-5/3 -> -1.666667', '-1'), ('-5/3 -> -1.666667', '-2'), ('-5/3 -> -1.666667', '-2'))
     AS v(label, c)
GROUP BY label ORDER BY label;

--
-- Sums are exact and kept in 128 bits: a total may pass the range on the
-- way; only a final total outside the range raises 22003.
--
SELECT sum(c) AS back_in_range, avg(c) AS avg_of_three
FROM (VALUES ('9223372036854.775807'::credits), ('9223372036854.775807'),
             ('-9223372036854.775807')) AS v(c);
SELECT avg(c) AS avg_of_largest, min(c), max(c)
FROM (VALUES ('9223372036854.775807'::credits), ('9223372036854.775807')) AS v(c);
SELECT avg(c) AS avg_of_smallest
FROM (VALUES ('-9223372036854.775808'::credits), ('-9223372036854.775808'),
             ('-9223372036854.775808')) AS v(c);
SELECT stmt, pg_temp.fails(stmt) AS result FROM (VALUES
    ($$SELECT sum(c) FROM (VALUES ('9223372036854.775807'::credits), ('0.000001')) v(c)$$),
    ($$SELECT sum(c) FROM (VALUES ('-9223372036854.775808'::credits), ('-0.000001')) v(c)$$),
    ($$SELECT sum(c) FROM (VALUES ('9223372036854.775807'::credits), ('9223372036854.775807')) v(c)$$),
    -- 2^64 micro-credits: a 64-bit sum would wrap around to exactly zero
    ($$SELECT sum(c) FROM (VALUES ('9223372036854.775807'::credits), ('9223372036854.775807'), ('0.000002')) v(c)$$)
    ) AS v(stmt);

--
-- Moving aggregates in a window frame (rows leave the frame again).
--
SELECT i, c,
       sum(c) OVER w AS moving_sum, avg(c) OVER w AS moving_avg,
       min(c) OVER w AS moving_min, max(c) OVER w AS moving_max
FROM (VALUES (1, '9223372036854.775807'::credits), (2, '-9223372036854.775807'),
             (3, '9223372036854.775807'), (4, NULL), (5, '0.000001'),
             (6, '0.000002'), (7, NULL), (8, NULL)) AS v(i, c)
WINDOW w AS (ORDER BY i ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
ORDER BY i;
SELECT pg_temp.fails($$
    SELECT sum(c) OVER (ORDER BY i ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
    FROM (VALUES (1, '9223372036854.775807'::credits), (2, '0.000001')) v(i, c)$$) AS window_overflow;

--
-- Parallel aggregation: partial states are serialized in workers and
-- combined in the leader, without losing a bit.
--
-- 131072 rows of -2^50 micro-credits: each worker's partial sum is far
-- outside the 64-bit range, the total is exactly -2^67 micro-credits, which a
-- 64-bit sum would wrap to 0.  sum must fail, avg must be exactly -2^50.
CREATE TABLE big (c credits);
INSERT INTO big SELECT '-1125899906.842624' FROM generate_series(1, 131072);
-- 200000 rows with a known total: i credits and i micro-credits each
CREATE TABLE known (i bigint, g int, c credits);
INSERT INTO known SELECT i, i % 3, i * '1.000001'::credits FROM generate_series(1, 200000) AS i;
ANALYZE big, known;

SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET parallel_leader_participation = off;   -- the workers do all the scanning

EXPLAIN (COSTS OFF) SELECT sum(c), avg(c), min(c), max(c) FROM known;
-- the plan really ran in two workers (row counts vary, so they are left out)
CREATE FUNCTION pg_temp.workers(query text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    line text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) ' || query LOOP
        CONTINUE WHEN line !~ '(Aggregate|Gather|Workers)';
        RETURN NEXT regexp_replace(line, '\s*\(actual rows=\d+ loops=\d+\)', '');
    END LOOP;
END $$;
SELECT * FROM pg_temp.workers('SELECT sum(c), avg(c) FROM known');

SELECT sum(c) AS total,
       sum(c) = '20000120000.1'::credits AS exact_total,   -- (n(n+1)/2) * 1.000001
       avg(c) AS average,
       avg(c) = '100000.600000'::credits AS exact_average,      -- 100000.5 * 1.000001 = 100000.6000005, tie to even
       min(c), max(c),
       sum(c)::numeric = sum(c::numeric) AS agrees_with_numeric
FROM known;

SELECT avg(c) AS avg_of_minus_2_to_the_50, count(*) FROM big;
SELECT pg_temp.fails('SELECT sum(c) FROM big') AS sum_to_minus_2_to_the_67;

-- grouped, in parallel
EXPLAIN (COSTS OFF) SELECT g, sum(c), avg(c) FROM known GROUP BY g ORDER BY g;
SELECT g, sum(c), avg(c) FROM known GROUP BY g ORDER BY g;
-- the same in numeric: equal sums; the averages differ where numeric's
-- round() breaks a tie away from zero (group 0: 100000.6000005 exactly)
SELECT g, sum(c::numeric), round(avg(c::numeric), 6) FROM known GROUP BY g ORDER BY g;

RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather;
RESET parallel_leader_participation;

-- the same results without parallelism
SET max_parallel_workers_per_gather = 0;
SELECT sum(c), avg(c), min(c), max(c) FROM known;
SELECT avg(c) AS avg_of_minus_2_to_the_50 FROM big;
SELECT pg_temp.fails('SELECT sum(c) FROM big') AS sum_to_minus_2_to_the_67;
RESET max_parallel_workers_per_gather;

DROP TABLE amounts, big, known;
