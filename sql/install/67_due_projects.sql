-- ---------------------------------------------------------------------------------------------
-- The periodic runs' one pass over every project (after the spending controls, which it reads).
-- ---------------------------------------------------------------------------------------------

-- The projects a periodic run may have to act on, found in one pass over the accounts with
-- their usage accrued and not yet deducted (the costly part, computed once per run): those
-- not cut off whose accrued usage has used up the balance, and those whose armed auto-recharge
-- finds the available balance below its threshold, each list with the accrued usage of its
-- projects; those whose lots are not all alike that may have to be judged kind by kind (also
-- with nothing accruing: nothing may be left for their instances and volumes); and the watched
-- projects whose spending controls call for action (credits._spending_due), from the same
-- accrued usage, their spending_totals (a row not current counts as due:
-- credits._act_on_spending reads the project's position again) and their rates.  Lists in
-- project order.  (BEGIN ATOMIC: bound at install time, whatever the caller's search_path.
-- The planner expects 1000 hour segments per resource and 200 projects, so left alone it
-- nested-loops 100,000 index probes into accounts and sizes a hash table for millions of
-- groups; sorting in memory and no nested loops take a third of the time at 100,000 projects.)
CREATE FUNCTION credits._due_projects(OUT used_up_ids bigint[], OUT used_up_accrued credits.credits[],
                                      OUT recharge_ids bigint[], OUT recharge_accrued credits.credits[],
                                      OUT special_ids bigint[], OUT spending_ids bigint[])
    LANGUAGE sql STABLE
    SET work_mem = '64MB' SET enable_hashagg = off SET enable_nestloop = off
BEGIN ATOMIC
    WITH positions AS (
        SELECT a.project_id, a.balance, a.depleted, a.deducted_until, u.accumulating,
               coalesce(u.accumulating, '0'::credits.credits) AS accrued,
               coalesce(r.enabled AND r.armed, false) AS recharging, r.threshold,
               s.project_id IS NOT NULL AS special, s.for_instances, s.for_volumes,
               u.today, u.this_month, u.api_last_hour
          FROM credits.accounts a
          LEFT JOIN credits._accrued_by_project u ON u.project_id = a.project_id
          LEFT JOIN credits.auto_recharge r ON r.project_id = a.project_id
          LEFT JOIN (SELECT l.project_id,
                            coalesce(sum(l.remaining - l.held)
                                         FILTER (WHERE (credits._kind_mask(l.applies_to) & 1) <> 0
                                                   AND (l.expires_at IS NULL OR l.expires_at > credits.hour_of(credits.now()))),
                                     '0'::credits.credits) AS for_instances,
                            coalesce(sum(l.remaining - l.held)
                                         FILTER (WHERE (credits._kind_mask(l.applies_to) & 2) <> 0
                                                   AND (l.expires_at IS NULL OR l.expires_at > credits.hour_of(credits.now()))),
                                     '0'::credits.credits) AS for_volumes
                       FROM credits.credit_lots l
                      WHERE l.active AND l.project_id IN (SELECT x FROM credits._special_projects() AS x)
                      GROUP BY l.project_id) AS s ON s.project_id = a.project_id
         WHERE u.project_id IS NOT NULL OR (r.enabled AND r.armed) OR s.project_id IS NOT NULL
            OR a.project_id IN (SELECT c.project_id FROM credits.spending_controls c)),
    -- (each watched project's controls, spending totals and the rest of its burn rate, as
    -- credits._spending_positions reads it: the rates, and the deducted API usage of the last
    -- ended hour)
    watched AS (
        SELECT c.project_id, c AS controls, t AS totals, br.burn_rate
          FROM credits.spending_controls c
          JOIN credits.spending_totals t ON t.project_id = c.project_id
          LEFT JOIN (SELECT b.project_id, credits.burn_rate(b.amount, interval '1 hour') AS burn_rate
                       FROM (SELECT r.project_id, r.rate_per_hour AS amount
                               FROM credits.resources r
                              WHERE r.state IN ('running', 'available')
                                AND r.project_id IN (SELECT c.project_id FROM credits.spending_controls c)
                             UNION ALL
                             SELECT t.project_id, t.uncollected - t.amount
                               FROM credits.transactions t
                              WHERE t.type = 'usage' AND t.status = 'completed'
                                AND t.usage_hour = credits.hour_of(credits.now()) - interval '1 hour'
                                AND t.project_id IN (SELECT c.project_id FROM credits.spending_controls c)
                                AND NOT EXISTS (SELECT FROM credits.resources r
                                                 WHERE r.project_id = t.project_id AND r.resource_id = t.resource_id)) AS b
                      GROUP BY b.project_id) AS br ON br.project_id = c.project_id),
    -- (a project whose lots are not all alike: what it can spend is what its lots have left,
    -- given as the accrued usage that leaves that much of the balance; credits._enforce_lots
    -- judges its cut-off)
    standing AS (
        SELECT p.*,
               CASE WHEN p.special AND p.recharging
                    THEN p.balance - credits._spendable(p.project_id, 7, credits.now())
                    ELSE p.accrued END AS effective_accrued
          FROM positions p),
    -- (OFFSET 0: kept a subquery, so that the watched projects' positions reach
    -- credits._spending_due as its columns and it is inlined; with the expressions in their
    -- place it would be called once per project, at 25,000 projects 0.4 s)
    flagged AS (
        SELECT p.project_id, p.effective_accrued AS accrued,
               -- (a project with no usage accruing has used nothing up: one at zero that was
               -- never funded is not cut off for having auto-recharge configured)
               p.accumulating IS NOT NULL AND NOT p.special AND NOT p.depleted
                 AND credits._used_up(p.balance, p.accumulating) AS used_up,
               p.recharging AND credits._available(p.balance, p.effective_accrued) < p.threshold AS recharge,
               -- (its lots for a kind cannot all be left over when the accrued usage, whatever
               -- its kind, is at least what they hold)
               p.special AND (p.depleted OR p.for_instances <= p.accrued OR p.for_volumes <= p.accrued) AS judge,
               -- (a watched project's controls and position, nulls for the others; the current
               -- UTC day and month as scalar subqueries, computed once)
               (SELECT date_trunc('day', credits.now(), 'UTC')) AS day_start,
               (SELECT date_trunc('month', credits.now(), 'UTC')) AS month_start,
               w.project_id IS NOT NULL AS watched, w.controls, w.totals, p.deducted_until,
               -- (as balance_overview: the lots' rule when they are not all alike)
               CASE WHEN w.project_id IS NULL THEN NULL
                    WHEN p.special THEN credits._lots_available(p.project_id)
                    ELSE credits._available(p.balance, p.accumulating) END AS available,
               credits._burn_rate_combine(coalesce(w.burn_rate, '0'::credits.credits),
                                          coalesce(p.api_last_hour, '0'::credits.credits)) AS burn_rate,
               (w.totals).day_spent + coalesce(p.today, '0'::credits.credits) AS spent_today,
               (w.totals).month_spent + coalesce(p.this_month, '0'::credits.credits) AS spent_this_month
          FROM standing p
          LEFT JOIN watched w ON w.project_id = p.project_id
        OFFSET 0)
    SELECT coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.used_up), '{}'),
           coalesce(array_agg(f.accrued ORDER BY f.project_id) FILTER (WHERE f.used_up), '{}'),
           coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.recharge), '{}'),
           coalesce(array_agg(f.accrued ORDER BY f.project_id) FILTER (WHERE f.recharge), '{}'),
           coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.judge), '{}'),
           -- (a spending_totals row not current: credits._act_on_spending counts the project's
           -- position itself)
           coalesce(array_agg(f.project_id ORDER BY f.project_id)
                        FILTER (WHERE f.watched
                                  AND (NOT credits._totals_current(f.totals, f.deducted_until, f.day_start, f.month_start)
                                       OR credits._spending_due(f.controls, f.available, f.burn_rate,
                                                                f.spent_today, f.spent_this_month,
                                                                f.day_start, f.month_start,
                                                                EXISTS (SELECT FROM credits.resources x
                                                                         WHERE x.project_id = f.project_id
                                                                           AND x.kind = 'instance'
                                                                           AND x.state = 'running')))), '{}')
      FROM flagged f;
END;
