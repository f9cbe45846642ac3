-- credits 0.1.0 -> 0.2.0, run by ALTER EXTENSION credits UPDATE.
--
-- Every change made to the install sources (sql/install/*.sql) since 0.1.0 is also made here,
-- so that an upgraded database ends with exactly the objects of a fresh 0.2.0 install
-- (test/t/090_upgrade.pl compares them, and checks that every row is kept).
\echo Use "ALTER EXTENSION credits UPDATE TO '0.2.0'" to load this file. \quit

-- ---------------------------------------------------------------------------------------------
-- deduct: a usage hour's amount is what it took from the balance, so that the history adds up
-- to the balance.  In 0.1.0 a completed usage hour's amount was minus its whole charge and its
-- uncollected the part the balance did not cover; from 0.2.0 its amount is minus what it took
-- (charge = -amount + uncollected), and verify() checks that each balance is the sum of the
-- amounts of its completed transactions.  The completed usage rows are rewritten once, here:
-- the only change ever made to completed rows.  The guard trigger refuses every change to a
-- completed row, so it is disabled for this one UPDATE and enabled again, inside this script's
-- transaction (only the table's owner can do that; no application role can).  Accumulating
-- rows need nothing: 0.1.0 never gave them an uncollected part, and their amount stays their
-- charge so far.  The 0.1.0 library symbol of the deduction refuses to run (src/deduction.c).
-- ---------------------------------------------------------------------------------------------
ALTER TABLE credits.transactions DROP CONSTRAINT usage_shape;
ALTER TABLE credits.transactions DISABLE TRIGGER transactions_guard;
UPDATE credits.transactions
   SET amount = amount OPERATOR(credits.+) uncollected
 WHERE type = 'usage' AND status = 'completed' AND uncollected <> '0'::credits.credits;
ALTER TABLE credits.transactions ENABLE TRIGGER transactions_guard;
ALTER TABLE credits.transactions ADD
    CONSTRAINT usage_shape CHECK (
        CASE WHEN type = 'usage'
             THEN resource_id IS NOT NULL AND usage_hour IS NOT NULL AND accrued_units IS NOT NULL
                  -- (a whole UTC hour: credits._completed_usage finds rows hour by hour)
                  AND usage_hour = credits.hour_of(usage_hour)
                  AND status IN ('accumulating', 'completed') AND amount <= '0'::credits.credits
                  AND uncollected >= '0'::credits.credits
                  AND (status = 'completed' OR uncollected = '0'::credits.credits)
                  AND method_id IS NULL AND idempotency_key IS NULL
             ELSE resource_id IS NULL AND usage_hour IS NULL AND accrued_units IS NULL
                  AND status IN ('pending', 'completed', 'failed') AND amount > '0'::credits.credits
                  AND uncollected = '0'::credits.credits
        END);

-- Deducts every usage hour before cur, oldest first per project, each written once, and
-- debits the accounts (src/deduction.c, which says how).  Returns the number of usage
-- transactions completed.  The caller holds the periodic-run lock.
CREATE OR REPLACE FUNCTION credits._deduct_ended_hours(cur timestamptz, at timestamptz) RETURNS bigint
    AS 'MODULE_PATHNAME', 'credits_deduct_hours' LANGUAGE C STRICT;

-- What a project consumes per hour, input by input for credits.burn_rate(amount, '1 hour'):
-- the rates of its running instances and accessible volumes, plus its API usage of the last
-- ended hour (deducted or not: its charge, collected or not).  Read it with a project_id
-- filter: it reaches every branch.
CREATE OR REPLACE VIEW credits._burn_rate_inputs AS
SELECT r.project_id, r.rate_per_hour AS amount
  FROM credits.resources r
 WHERE r.state IN ('running', 'available')
UNION ALL
SELECT t.project_id, t.uncollected - t.amount
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

-- One row per transaction, newest first; usage hours not yet deducted show as accumulating
-- (with a null transaction_id while they have no stored row yet).  Amounts add up: over the
-- completed rows to the balance (a completed usage hour's amount is what it took from the
-- balance, its uncollected the rest of its charge), and with the accumulating rows to the
-- available balance.  An accumulating hour shows what it would take if it were deducted now: the
-- project's charges not yet deducted are taken from the balance in the deduction's order
-- (oldest hour first, within an hour stored rows by id, then the others by resource id in
-- byte order), and what the balance would not cover shows as uncollected.
CREATE OR REPLACE VIEW credits.transaction_history AS
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
           -u.taken::credits.credits, 'accumulating'::credits.transaction_status,
           u.charge - u.taken::credits.credits
      FROM (SELECT u.transaction_id, u.project_id, u.usage_hour, u.description, -u.amount AS charge,
                   -- (the balance left by the charges before it, between zero and its charge)
                   greatest(least(a.balance::numeric - sum((-u.amount)::numeric) OVER taking,
                                  '0'::numeric) + (-u.amount)::numeric,
                            '0'::numeric) AS taken
              FROM credits.usage_in_progress u
              JOIN credits.accounts a ON a.project_id = u.project_id
            WINDOW taking AS (PARTITION BY u.project_id
                              ORDER BY u.usage_hour, u.transaction_id NULLS LAST, u.resource_id COLLATE "C")) AS u) AS h
 ORDER BY h.date DESC, h.transaction_id DESC NULLS FIRST;

-- Every broken invariant, one row each (no rows: all is well).  An unknown project is an
-- error (P0002), not a clean result.  For one project its transactions are read through the
-- indexes (deposits by the history index, usage hour by hour); for all, the whole table.
-- (jit = off: the plan costs the whole-table branches too, and compiling it took about 1 s
-- at 100,000 projects, 500 times the time of checking one project.)
CREATE OR REPLACE FUNCTION credits.verify(project_id bigint DEFAULT NULL)
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
          LEFT JOIN (SELECT t.project_id, sum(t.amount) AS total,
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
        -- (a usage hour's charge is -amount + uncollected; only a completed one has uncollected)
        OR (t.type = 'usage'
            AND t.uncollected::numeric - t.amount::numeric <> credits._accrued_amount(t.accrued_units)::numeric)
        OR (t.type = 'usage' AND t.status = 'completed' AND t.usage_hour + interval '1 hour' > t.completed_at)
        OR t.uncollected < '0'::credits.credits
        OR (NOT (t.type = 'usage' AND t.status = 'completed') AND t.uncollected <> '0'::credits.credits)
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

