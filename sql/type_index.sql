-- The credits type: comparison, btree and hash indexes, sorting, joins,
-- grouping and hash partitioning; the operator catalogue.
SET search_path = public, credits;

--
-- Comparison operators over the extremes and neighbours.
--
SELECT a, b, a = b AS eq, a <> b AS ne, a < b AS lt, a <= b AS le, a > b AS gt, a >= b AS ge
FROM unnest('{-9223372036854.775808, -0.000001, 0, 0.000001, 9223372036854.775807}'::credits[]) AS a,
     unnest('{-9223372036854.775808, 0, 9223372036854.775807}'::credits[]) AS b
ORDER BY a, b;

--
-- The operator catalogue: estimators, commutators, negators, hash and merge
-- joinability; the btree and hash operator classes and their support
-- functions.
--
SELECT o.oprname, o.oprleft::regtype, o.oprright::regtype, o.oprresult::regtype,
       o.oprcom::regoperator AS commutator, o.oprnegate::regoperator AS negator,
       o.oprrest AS restrict, o.oprjoin AS join, o.oprcanhash AS hashes, o.oprcanmerge AS merges
FROM pg_operator o
WHERE o.oprnamespace = 'credits'::regnamespace
  AND 'credits.credits'::regtype IN (o.oprleft, o.oprright)
ORDER BY o.oprname, o.oprleft::regtype::text, o.oprright::regtype::text;

SELECT am.amname, opc.opcname, opc.opcdefault, ap.amprocnum, ap.amproc::regprocedure
FROM pg_opclass opc
JOIN pg_am am ON am.oid = opc.opcmethod
JOIN pg_amproc ap ON ap.amprocfamily = opc.opcfamily
WHERE opc.opcintype = 'credits.credits'::regtype
ORDER BY am.amname, ap.amprocnum;

SELECT am.amname, ao.amopstrategy, ao.amopopr::regoperator
FROM pg_amop ao JOIN pg_am am ON am.oid = ao.amopmethod
WHERE ao.amoplefttype = 'credits.credits'::regtype
ORDER BY am.amname, ao.amopstrategy;

-- every function of the type is immutable, parallel safe and strict; the
-- exceptions listed are the aggregate support functions that take a NULL
-- state, which must not be strict
CREATE TEMP VIEW type_functions AS
SELECT p.*
FROM pg_proc p
WHERE p.pronamespace = 'credits'::regnamespace
  AND (p.proname ~ ('^credits_(in|out|recv|send|pl|mi|um|up|mul_(numeric|int4|int8)'
                    '|div_(numeric|int4|int8|credits)|eq|ne|lt|le|gt|ge|cmp|sortsupport'
                    '|hash|hash_extended|smaller|larger|agg_(accum|accum_inv|combine'
                    '|serialize|deserialize)|sum_final|avg_final)$')
       OR p.proname IN ('numeric_mul_credits', 'int4_mul_credits', 'int8_mul_credits')
       OR (p.proname IN ('credits', 'numeric', 'abs', 'sum', 'avg', 'min', 'max')
           AND 'credits.credits'::regtype IN (p.prorettype, p.proargtypes[0])));
SELECT count(*) AS functions, count(*) FILTER (WHERE prokind = 'a') AS aggregates FROM type_functions;
SELECT oid::regprocedure AS function, provolatile, proparallel, proisstrict
FROM type_functions
WHERE provolatile <> 'i' OR proparallel <> 's' OR (NOT proisstrict AND prokind <> 'a')
ORDER BY 1;

-- the aggregates: parallel safe, with combine, serialize and deserialize
SELECT a.aggfnoid::regprocedure AS aggregate, a.aggcombinefn, a.aggserialfn, a.aggdeserialfn,
       a.aggminvtransfn, a.aggsortop::regoperator AS sortop, p.proparallel
FROM pg_aggregate a JOIN type_functions p ON p.oid = a.aggfnoid
ORDER BY 1;

--
-- Data for the index, sort and join tests.
--
CREATE TABLE ledger (id int PRIMARY KEY, amount credits NOT NULL);
INSERT INTO ledger
SELECT i, ((i * 7919) % 20000 - 10000) * '0.010001'::credits FROM generate_series(1, 20000) AS i;
INSERT INTO ledger VALUES (20001, '-9223372036854.775808'), (20002, '9223372036854.775807'),
                          (20003, '0.000001'), (20004, '-0.000001');
CREATE TABLE prices (amount credits, label text);
INSERT INTO prices VALUES ('-9223372036854.775808', 'smallest'), ('9223372036854.775807', 'largest'),
    ('0.000001', 'tiny'), ('-0.000001', 'negative tiny'), ('0', 'zero'), ('12.345678', 'unmatched'),
    ('50.005', 'matched');
ANALYZE ledger, prices;

--
-- btree: index scans, ordered scans, uniqueness.
--
CREATE INDEX ledger_amount ON ledger (amount);
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT id, amount FROM ledger WHERE amount = '50.005';
SELECT id, amount FROM ledger WHERE amount = '50.005';
EXPLAIN (COSTS OFF) SELECT amount FROM ledger WHERE amount BETWEEN '-0.02' AND '0.02' ORDER BY amount;
SELECT amount FROM ledger WHERE amount BETWEEN '-0.02' AND '0.02' ORDER BY amount;
SELECT amount FROM ledger ORDER BY amount LIMIT 3;
SELECT amount FROM ledger ORDER BY amount DESC LIMIT 3;
SELECT count(*) FROM ledger WHERE amount > '0' AND amount < '1';
RESET enable_seqscan;
RESET enable_bitmapscan;

CREATE TABLE unique_amounts (amount credits UNIQUE);
INSERT INTO unique_amounts VALUES ('1.5'), ('1.500001');
\set VERBOSITY sqlstate
INSERT INTO unique_amounts VALUES ('1.500000');
\set VERBOSITY default

-- sorting without an index (sort support) agrees with sorting the numbers
SET enable_indexscan = off;
SET enable_indexonlyscan = off;
SET enable_bitmapscan = off;
SELECT bool_and(sorted_as_credits = sorted_as_numeric) AS same_order
FROM (SELECT row_number() OVER (ORDER BY amount, id) AS r, id AS sorted_as_credits FROM ledger) a
JOIN (SELECT row_number() OVER (ORDER BY amount::numeric, id) AS r, id AS sorted_as_numeric FROM ledger) b
USING (r);
SELECT amount FROM prices ORDER BY amount;
SELECT amount FROM prices ORDER BY amount DESC NULLS LAST;
RESET enable_indexscan;
RESET enable_indexonlyscan;
RESET enable_bitmapscan;

--
-- Joins: merge join and hash join on credits.
--
SET enable_nestloop = off;
SET enable_hashjoin = off;
SET enable_mergejoin = on;
EXPLAIN (COSTS OFF) SELECT p.label, l.id FROM prices p JOIN ledger l USING (amount) ORDER BY l.id;
SELECT p.label, l.id, l.amount FROM prices p JOIN ledger l USING (amount) ORDER BY l.id;
SET enable_mergejoin = off;
SET enable_hashjoin = on;
EXPLAIN (COSTS OFF) SELECT p.label, l.id FROM prices p JOIN ledger l USING (amount) ORDER BY l.id;
SELECT p.label, l.id, l.amount FROM prices p JOIN ledger l USING (amount) ORDER BY l.id;
RESET enable_nestloop;
RESET enable_hashjoin;
RESET enable_mergejoin;

--
-- Grouping and DISTINCT, by hashing and by sorting.
--
CREATE TABLE repeats AS SELECT (i % 4) * '0.25'::credits AS amount FROM generate_series(1, 1000) AS i;
ANALYZE repeats;
SET enable_sort = off;
EXPLAIN (COSTS OFF) SELECT amount, count(*) FROM repeats GROUP BY amount;
SELECT amount, count(*) FROM repeats GROUP BY amount ORDER BY amount;
RESET enable_sort;
SET enable_hashagg = off;
EXPLAIN (COSTS OFF) SELECT DISTINCT amount FROM repeats;
SELECT DISTINCT amount FROM repeats;
RESET enable_hashagg;

--
-- Hash index.
--
CREATE INDEX ledger_amount_hash ON ledger USING hash (amount);
DROP INDEX ledger_amount;
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM ledger WHERE amount = '-0.000001';
SELECT id FROM ledger WHERE amount = '-0.000001';
RESET enable_seqscan;
RESET enable_bitmapscan;

--
-- Hashing is int8's hashing of the micro-credit count; hash partitioning
-- routes and prunes by it.
--
SELECT bool_and(credits_hash(c) = hashint8(m)) AS hash_matches_int8,
       bool_and(credits_hash_extended(c, 42) = hashint8extended(m, 42)) AS extended_matches_int8
FROM (SELECT m, m * '0.000001'::credits AS c
      FROM unnest(ARRAY[0, 1, -1, 1500000, 9223372036854775807, -9223372036854775808]::bigint[]) AS m) s;
CREATE TABLE deposits (amount credits) PARTITION BY HASH (amount);
CREATE TABLE deposits_0 PARTITION OF deposits FOR VALUES WITH (MODULUS 3, REMAINDER 0);
CREATE TABLE deposits_1 PARTITION OF deposits FOR VALUES WITH (MODULUS 3, REMAINDER 1);
CREATE TABLE deposits_2 PARTITION OF deposits FOR VALUES WITH (MODULUS 3, REMAINDER 2);
INSERT INTO deposits SELECT i * '0.01'::credits FROM generate_series(1, 300) AS i;
SELECT count(*) AS rows, count(DISTINCT tableoid) AS partitions_used FROM deposits;
SELECT bool_and(satisfies_hash_partition('deposits'::regclass, 3,
                    substr(tableoid::regclass::text, 10)::int, amount)) AS each_row_in_its_partition
FROM deposits;
EXPLAIN (COSTS OFF) SELECT * FROM deposits WHERE amount = '1.50';
SELECT tableoid::regclass, amount FROM deposits WHERE amount = '1.50';

DROP TABLE ledger, prices, unique_amounts, repeats, deposits;
