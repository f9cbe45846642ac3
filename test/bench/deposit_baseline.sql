-- pgbench: the baseline, a plain balance row raised by an UPDATE, for a random one of
-- 10,000 rows.
\set p random(1, 10000)
\set amount random(5, 500)
UPDATE plain_balances SET balance = balance + :amount WHERE id = :p;
