-- ---------------------------------------------------------------------------------------------
-- What users read: balances and runway, the transaction history, the resources, and verify().
-- ---------------------------------------------------------------------------------------------

-- Every completed usage transaction, found hour by hour: each project's in its deducted
-- hours, [accounts.deducted_from, accounts.deducted_until), where the deduction that completes
-- them puts them.  Each (hour, project) is one probe of the unique index (usage_hour,
-- project_id, resource_id), about 1 microsecond, plus its rows; the index is ordered by hour
-- so that the hourly run only appends to it (sql/install/30_ledger_tables.sql).  The probe is
-- fenced (OFFSET 0) so that no statistics can turn it into a scan of other projects' rows;
-- the outer equalities hand a filter on project_id to the accounts and one on usage_hour to
-- the hours.  So one project's read probes its own hours only, and every project's usage of a
-- time range probes those hours only.  (usage_hour is a whole UTC hour: usage_shape.
-- verify() checks that no completed hour lies outside its project's deducted hours.)
CREATE VIEW credits._completed_usage AS
SELECT t.*
  FROM generate_series((SELECT min(f.usage_hour) FROM credits.transactions f WHERE f.type = 'usage'),
                       (SELECT max(l.usage_hour) FROM credits.transactions l WHERE l.type = 'usage'),
                       interval '1 hour') AS h(usage_hour)
  JOIN credits.accounts a ON h.usage_hour >= a.deducted_from AND h.usage_hour < a.deducted_until
  CROSS JOIN LATERAL (SELECT u.* FROM credits.transactions u
                       WHERE u.usage_hour = h.usage_hour AND u.project_id = a.project_id
                         AND u.type = 'usage' AND u.status = 'completed'
                      OFFSET 0) AS t
 WHERE t.project_id = a.project_id AND t.usage_hour = h.usage_hour;

-- burn_rate(amount, per): credits per hour of inputs "amount every per" (src/burn_rate.c).
CREATE FUNCTION credits._burn_rate_accum(credits.credits, credits.credits, interval) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_burn_rate_accum' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION credits._burn_rate_combine(credits.credits, credits.credits) RETURNS credits.credits
    AS 'MODULE_PATHNAME', 'credits_burn_rate_combine' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE AGGREGATE credits.burn_rate(amount credits.credits, per interval) (
    SFUNC = credits._burn_rate_accum, STYPE = credits.credits, INITCOND = '0',
    COMBINEFUNC = credits._burn_rate_combine, PARALLEL = SAFE);

-- What a project consumes per hour, input by input for credits.burn_rate(amount, '1 hour'):
-- the rates of its running instances and accessible volumes, plus its API usage of the last
-- ended hour (deducted or not: its charge, collected or not).  Read it with a project_id
-- filter: it reaches every branch.
CREATE VIEW credits._burn_rate_inputs AS
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

-- What a project consumes per hour now.  (BEGIN ATOMIC: bound at install time, whatever the
-- caller's search_path.)  SECURITY DEFINER: readers may not read the tables.
CREATE FUNCTION credits._burn_rate_of(project_id bigint) RETURNS credits.credits
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
BEGIN ATOMIC
    SELECT credits.burn_rate(b.amount, interval '1 hour')
      FROM credits._burn_rate_inputs b WHERE b.project_id = _burn_rate_of.project_id;
END;

-- Each project's usage accrued and not yet deducted, and what it consumes per hour now, for
-- every project with either: one grouping of both, so that a read of one project is one small
-- grouped subquery joined to its account whatever the statistics say, and a read of every
-- project is one set-based pass.
CREATE VIEW credits._usage_by_project AS
SELECT x.project_id,
       coalesce(-credits._usage_total(x.amount) FILTER (WHERE x.accrued), '0'::credits.credits) AS accumulating,
       coalesce(credits.burn_rate(x.amount, interval '1 hour') FILTER (WHERE NOT x.accrued),
                '0'::credits.credits) AS burn_rate
  FROM (SELECT u.project_id, true AS accrued, u.amount FROM credits.usage_in_progress u
        UNION ALL
        SELECT b.project_id, false, b.amount FROM credits._burn_rate_inputs b) AS x
 GROUP BY x.project_id;

-- One row per project: balance, usage accumulating, what is available, burn rate and runway.
-- hours_remaining is rounded to 0.01 h; runs_out_at uses the exact quotient, to the second.
-- Read with a project_id filter, the filter reaches inside credits._usage_by_project (one
-- project's rows through its indexes); read for every project, it is one set-based pass, not
-- a plan run once per project.  (The view reads the tables with its owner's rights, so
-- readers need no SECURITY DEFINER.)
CREATE VIEW credits.balance_overview AS
SELECT a.project_id,
       a.balance AS current_balance,
       v.accumulating,
       v.available_balance,
       v.burn_rate,
       CASE WHEN v.burn_rate > '0'::credits.credits
            THEN round(v.available_balance / v.burn_rate, 2) END AS hours_remaining,
       CASE WHEN v.burn_rate > '0'::credits.credits
            THEN date_trunc('second', credits.now() + (v.available_balance / v.burn_rate) * interval '1 hour')
       END AS runs_out_at,
       coalesce(r.enabled, false) AS auto_recharge_enabled
  FROM credits.accounts a
  LEFT JOIN credits.auto_recharge r ON r.project_id = a.project_id
  LEFT JOIN credits._usage_by_project u ON u.project_id = a.project_id
  -- (the projects whose lots are not all alike: an expiry, a scope or a held refund)
  LEFT JOIN (SELECT DISTINCT l.project_id FROM credits.credit_lots l
              WHERE l.active AND (l.expires_at IS NOT NULL OR l.applies_to IS NOT NULL
                                  OR l.held > '0'::credits.credits)) AS unlike
         ON unlike.project_id = a.project_id
  CROSS JOIN LATERAL (
      SELECT coalesce(u.accumulating, '0'::credits.credits) AS accumulating,
             -- (what the lots have left after the accrued usage, as credits.available_balance();
             -- when they are all alike that is the balance less the accrued usage)
             CASE WHEN unlike.project_id IS NULL
                  THEN credits._available(a.balance, u.accumulating)
                  ELSE credits._lots_available(a.project_id)
             END AS available_balance,
             coalesce(u.burn_rate, '0'::credits.credits) AS burn_rate) AS v;

-- One row per transaction, newest first; usage hours not yet deducted show as accumulating
-- (with a null transaction_id while they have no stored row yet).  Amounts add up: over the
-- completed rows to the balance (a completed usage hour's amount is what it took from the
-- balance, its uncollected the rest of its charge), and with the accumulating rows to the
-- available balance.  An accumulating hour shows what it would take if it were deducted now: the
-- project's charges not yet deducted are drawn from its lots as the deduction will draw them
-- (credits._accrued_taken), and what the lots that may pay for it would not cover shows as
-- uncollected.
CREATE VIEW credits.transaction_history AS
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
           -u.taken, 'accumulating'::credits.transaction_status, u.charge - u.taken
      FROM credits._accrued_taken u) AS h
 ORDER BY h.date DESC, h.transaction_id DESC NULLS FIRST;

-- One row per credit lot: every completed deposit and auto-recharge (paid) and every grant
-- (promotional), with what remains of it and its state: active while something remains, else
-- used (by usage), expired or refunded (what took its last credits).
CREATE VIEW credits.lots AS
SELECT l.project_id, l.transaction_id, l.kind, l.amount, l.remaining, l.expires_at, l.priority, l.applies_to,
       coalesce(l.ended, 'active') AS state
  FROM credits.credit_lots l;
COMMENT ON VIEW credits.lots IS 'one row per credit lot (completed deposit, auto-recharge or grant): kind paid or promotional, amount, remaining, expiry, priority, kinds it pays for, state';

-- One row per payment method ever added, for choosing one on the billing page: removed ones
-- stay (their deposits name them) and say so.
CREATE VIEW credits.payment_method_overview AS
SELECT m.project_id, m.method_id, m.provider_ref, m.label, m.is_default, m.removed_at IS NOT NULL AS removed
  FROM credits.payment_methods m;

-- One row per instance or volume ever started or attached.
CREATE VIEW credits.resource_overview AS
SELECT r.project_id, r.resource_id, r.kind, r.state, r.rate_per_hour, r.state_since
  FROM credits.resources r;

-- The checks of credits.verify() for the project scope_id, or for all when it is null.  An
-- unknown project is an error (P0002), not a clean result.  For one project its transactions
-- are read through the indexes (deposits by the history index, usage hour by hour); for all,
-- the whole table.  Planned for each call with scope_id's value (a custom plan): the branches
-- of the other scope are gone before the planner sees the query, and a generic plan, which
-- statistics skewed by other projects could turn into a scan of every project's rows, is never
-- used.  (jit = off: compiling the plan over every project cost more than running it.)
CREATE FUNCTION credits._verify(scope_id bigint)
    RETURNS TABLE (project_id bigint, problem text)
    LANGUAGE plpgsql STABLE SET plan_cache_mode = force_custom_plan SET jit = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH scope AS (
        SELECT a.* FROM credits.accounts a WHERE _verify.scope_id IS NULL
        UNION ALL
        SELECT a.* FROM credits.accounts a
         WHERE _verify.scope_id IS NOT NULL
           AND a.project_id = (SELECT credits._require_account(_verify.scope_id))),
    -- the transactions of the one project asked about, read once (completed usage hour by
    -- hour, over its deducted hours)
    project_rows AS MATERIALIZED (
        SELECT t.* FROM credits.transactions t
         WHERE t.type <> 'usage' AND t.project_id = _verify.scope_id
        UNION ALL
        SELECT t.* FROM credits._completed_usage t
         WHERE t.project_id = _verify.scope_id
        UNION ALL
        SELECT t.* FROM credits.transactions t
         WHERE t.status = 'accumulating' AND t.project_id = _verify.scope_id),
    -- the lots of the accounts in scope
    lot_rows AS (
        SELECT l.* FROM credits.credit_lots l WHERE _verify.scope_id IS NULL
        UNION ALL
        SELECT l.* FROM credits.credit_lots l WHERE l.project_id = _verify.scope_id),
    -- the transactions of the accounts in scope (all of them: read by each check)
    scoped AS NOT MATERIALIZED (
        SELECT t.* FROM credits.transactions t
         WHERE _verify.scope_id IS NULL
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
     -- (its hour is already deducted when credits._api_usage_hour, the one place that asks,
     -- would count it in another hour; asked as of a time after every hour)
     WHERE credits._api_usage_hour(u.project_id, u.resource_id, u.usage_hour, 'infinity') <> u.usage_hour
    UNION ALL
    SELECT s.project_id, format('balance %s is negative', s.balance)
      FROM scope s WHERE s.balance < '0'::credits.credits
    UNION ALL
    SELECT t.project_id, format('transaction %s belongs to no account', t.transaction_id)
      FROM credits.transactions t
     WHERE _verify.scope_id IS NULL
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
     WHERE _verify.scope_id IS NULL AND t.type = 'usage'
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
     GROUP BY t.project_id HAVING count(*) > 1
    UNION ALL
    -- (lots: each adds up, what they hold is the balance, each credit added is one; the labels
    -- added in 0.2.0 are compared as text)
    SELECT l.project_id,
           format('the lot of transaction %s: amount %s is not remaining %s + used %s + refunded and expired %s, or held %s is not its pending refunds %s',
                  l.transaction_id, l.amount, l.remaining, l.used, coalesce(x.taken, '0'::credits.credits),
                  l.held, coalesce(x.pending, '0'::credits.credits))
      FROM lot_rows l
      LEFT JOIN (SELECT t.lot_id, -sum(t.amount) FILTER (WHERE t.status = 'completed') AS taken,
                        -sum(t.amount) FILTER (WHERE t.status = 'pending') AS pending
                   FROM scoped t WHERE t.lot_id IS NOT NULL GROUP BY t.lot_id) AS x ON x.lot_id = l.transaction_id
     WHERE l.remaining < '0'::credits.credits OR l.remaining > l.amount
        OR l.remaining + l.used + coalesce(x.taken, '0'::credits.credits) <> l.amount
        OR l.held <> coalesce(x.pending, '0'::credits.credits)
    UNION ALL
    SELECT s.project_id, format('its lots hold %s, not the balance %s', coalesce(x.total, '0'::credits.credits), s.balance)
      FROM scope s
      LEFT JOIN (SELECT l.project_id, sum(l.remaining) AS total FROM lot_rows l GROUP BY l.project_id) AS x
        USING (project_id)
     WHERE coalesce(x.total, '0'::credits.credits) <> s.balance
    UNION ALL
    SELECT t.project_id, format('completed %s %s of %s is not a lot of that amount', t.type, t.transaction_id, t.amount)
      FROM scoped t
      LEFT JOIN lot_rows l ON l.transaction_id = t.transaction_id
     WHERE t.status = 'completed' AND t.type::text IN ('deposit', 'auto_recharge', 'grant')
       AND (l.transaction_id IS NULL OR l.project_id <> t.project_id OR l.amount <> t.amount
            OR (l.kind = 'promotional') <> (t.type::text = 'grant'))
    UNION ALL
    -- (each day's usage summary is the sum of that day's completed hours, for every resource
    -- with hours in a summed day, and there is no other; 61_usage_days.sql)
    SELECT coalesce(d.project_id, h.project_id),
           format('the usage summary of %s on %s ', coalesce(d.resource_id, h.resource_id), coalesce(d.day, h.day))
           || CASE WHEN d.project_id IS NULL
                   THEN format('is missing: its hours sum to %s (uncollected %s)', h.amount, h.uncollected)
                   WHEN h.project_id IS NULL
                   THEN format('(%s, uncollected %s) has no completed hours in the project''s summed days',
                               d.amount, d.uncollected)
                   ELSE format('is %s (uncollected %s), but its hours sum to %s (uncollected %s)',
                               d.amount, d.uncollected, h.amount, h.uncollected) END
      FROM (SELECT d.* FROM credits.usage_days d
             WHERE _verify.scope_id IS NULL OR d.project_id = _verify.scope_id) AS d
      FULL JOIN (SELECT t.project_id, date_trunc('day', t.usage_hour, 'UTC') AS day, t.resource_id,
                        sum(t.amount) AS amount, sum(t.uncollected) AS uncollected
                   FROM scoped t
                   JOIN credits.usage_days_summarized s ON s.project_id = t.project_id
                  WHERE t.type = 'usage' AND t.status = 'completed'
                    AND t.usage_hour >= s.summarized_from AND t.usage_hour < s.summarized_until
                  GROUP BY 1, 2, 3) AS h
        ON h.project_id = d.project_id AND h.day = d.day AND h.resource_id = d.resource_id
     WHERE d.project_id IS NULL OR h.project_id IS NULL
        OR d.amount <> h.amount OR d.uncollected <> h.uncollected
    UNION ALL
    SELECT l.project_id, format('transaction %s has a lot but is no completed deposit, auto-recharge or grant', l.transaction_id)
      FROM lot_rows l
     WHERE NOT EXISTS (SELECT FROM scoped t
                        WHERE t.transaction_id = l.transaction_id AND t.status = 'completed'
                          AND t.type::text IN ('deposit', 'auto_recharge', 'grant'));
END $$;

-- Every broken invariant, one row each (no rows: all is well), for one project or for all.
CREATE FUNCTION credits.verify(project_id bigint DEFAULT NULL)
    RETURNS TABLE (project_id bigint, problem text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
    SELECT * FROM credits._verify(verify.project_id);
$$;
