-- pgbench: one deposit's life, as the app and the payment worker live it: add_credits
-- (pending, charge_requested queued) commits, then complete_deposit raises the balance.
-- Two transactions, for a random one of the 10,000 projects.
\set p random(1, 10000)
\set amount random(5, 500)
SELECT credits.add_credits(:p, (:amount)::credits.credits) AS id \gset
SELECT credits.complete_deposit(:p, :id, 'https://invoices.example/bench');
