-- pgbench: add_credits and complete_deposit in one transaction (one commit, like the
-- baseline), for a random one of the 10,000 projects.
\set p random(1, 10000)
\set amount random(5, 500)
BEGIN;
SELECT credits.add_credits(:p, (:amount)::credits.credits) AS id \gset
SELECT credits.complete_deposit(:p, :id, 'https://invoices.example/bench');
COMMIT;
