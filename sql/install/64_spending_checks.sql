-- ---------------------------------------------------------------------------------------------
-- Acting on spending controls: budget_reached (once per budget and UTC period), the stop of
-- running instances under on_budget 'stop', and the alerts balance_low, runway_low (once per
-- crossing) and balance_recovered.  The periodic runs check every watched project set-based
-- (credits._watch_spending); a deposit completion, a start and a configuration change check
-- their own project (credits._check_spending).
--
-- Exactly once: the decision is taken and written in one statement that holds the account
-- (FOR SHARE) and the controls row (FOR UPDATE) of each project it acts on, reading the
-- balance and the flags as they are once locked, so a deposit completing or a start running at
-- the same time is either seen whole or waited for; a project locked by another transaction is
-- left for the next run.
-- ---------------------------------------------------------------------------------------------

-- The alert and budget lines, each written once.
CREATE FUNCTION credits._below_balance(available credits.credits, below_balance credits.credits) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN coalesce(available < below_balance, false);
-- hours_remaining (available / burn_rate) below below_runway; never with a zero burn rate.
CREATE FUNCTION credits._below_runway(available credits.credits, burn_rate credits.credits,
                                      below_runway interval) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN coalesce(burn_rate > '0'::credits.credits
                    AND available::numeric * 3600 < burn_rate::numeric * extract(epoch FROM below_runway), false);
CREATE FUNCTION credits._budget_hit(spent credits.credits, budget credits.credits) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN coalesce(spent >= budget, false);

-- hours_remaining as balance_overview shows it (null when nothing burns).
CREATE FUNCTION credits._hours_remaining(available credits.credits, burn_rate credits.credits) RETURNS numeric
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN burn_rate > '0'::credits.credits THEN round(available / burn_rate, 2) END;

-- Acts on the projects whose positions are given (rows of credits._spending_positions):
-- queues the events their controls call for, records them, and stops the running instances
-- of projects over a budget with on_budget 'stop' (booked as stop_instance books them, an
-- instance_stopped event each).  The balance is read again under the account's lock.
-- Returns the projects acted on.
CREATE FUNCTION credits._act_on_spending(positions credits._spending_positions[]) RETURNS bigint[]
    LANGUAGE plpgsql AS $$
DECLARE
    at timestamptz := credits.now();
    acted bigint[];
    stop_ids bigint[];
    stop_budgets jsonb;
    r record;
BEGIN
    WITH pos AS (
        SELECT * FROM unnest(positions)),
    locked_accounts AS (
        SELECT a.project_id, a.balance FROM credits.accounts a
         WHERE a.project_id IN (SELECT p.project_id FROM pos p)
         ORDER BY a.project_id FOR SHARE OF a SKIP LOCKED),
    locked AS (
        SELECT c.*, la.balance FROM credits.spending_controls c JOIN locked_accounts la USING (project_id)
         ORDER BY c.project_id FOR UPDATE OF c SKIP LOCKED),
    judged AS (
        SELECT l.project_id, l.balance_low AS was_balance_low, l.runway_low AS was_runway_low,
               l.daily_reached, l.monthly_reached, l.daily_budget, l.monthly_budget, l.on_budget,
               l.below_balance, l.below_runway, v.available, p.burn_rate, p.spent_today,
               p.spent_this_month, p.day_start, p.month_start,
               credits._below_balance(v.available, l.below_balance) AS balance_low,
               credits._below_runway(v.available, p.burn_rate, l.below_runway) AS runway_low,
               credits._budget_hit(p.spent_today, l.daily_budget) AS daily_hit,
               credits._budget_hit(p.spent_this_month, l.monthly_budget) AS monthly_hit
          FROM locked l JOIN pos p USING (project_id)
          CROSS JOIN LATERAL (SELECT credits._available(l.balance, p.accumulating) AS available) AS v),
    changed AS (
        UPDATE credits.spending_controls c
           SET balance_low = j.balance_low, runway_low = j.runway_low,
               daily_reached = CASE WHEN j.daily_hit THEN j.day_start ELSE c.daily_reached END,
               monthly_reached = CASE WHEN j.monthly_hit THEN j.month_start ELSE c.monthly_reached END
          FROM judged j
         WHERE c.project_id = j.project_id
           AND (c.balance_low <> j.balance_low OR c.runway_low <> j.runway_low
                OR (j.daily_hit AND c.daily_reached IS DISTINCT FROM j.day_start)
                OR (j.monthly_hit AND c.monthly_reached IS DISTINCT FROM j.month_start))
        RETURNING j.*),
    queued AS (
        INSERT INTO credits.events (project_id, kind, resource_id, transaction_id, payload, created_at)
        SELECT ch.project_id, e.kind, NULL, NULL, e.payload || jsonb_build_object('at', at), at
          FROM changed ch
          CROSS JOIN LATERAL (VALUES
              (1, 'budget_reached', ch.daily_hit AND ch.daily_reached IS DISTINCT FROM ch.day_start,
               jsonb_build_object('budget', 'daily', 'limit', ch.daily_budget::text,
                                  'spent', ch.spent_today::text, 'period_start', ch.day_start,
                                  'on_budget', ch.on_budget)),
              (2, 'budget_reached', ch.monthly_hit AND ch.monthly_reached IS DISTINCT FROM ch.month_start,
               jsonb_build_object('budget', 'monthly', 'limit', ch.monthly_budget::text,
                                  'spent', ch.spent_this_month::text, 'period_start', ch.month_start,
                                  'on_budget', ch.on_budget)),
              (3, 'balance_low', ch.balance_low AND NOT ch.was_balance_low,
               jsonb_build_object('available_balance', ch.available::text,
                                  'below_balance', ch.below_balance::text)),
              (4, 'runway_low', ch.runway_low AND NOT ch.was_runway_low,
               jsonb_build_object('available_balance', ch.available::text, 'burn_rate', ch.burn_rate::text,
                                  'hours_remaining', credits._hours_remaining(ch.available, ch.burn_rate),
                                  'below_runway', ch.below_runway::text)),
              (5, 'balance_recovered',
               (ch.was_balance_low OR ch.was_runway_low) AND NOT ch.balance_low AND NOT ch.runway_low,
               jsonb_build_object('available_balance', ch.available::text,
                                  'hours_remaining', credits._hours_remaining(ch.available, ch.burn_rate))))
              AS e(n, kind, due, payload)
         WHERE e.due
         ORDER BY ch.project_id, e.n
        RETURNING project_id)
    SELECT (SELECT coalesce(array_agg(DISTINCT q.project_id), '{}') FROM queued q),
           (SELECT coalesce(array_agg(j.project_id), '{}') FROM judged j
             WHERE j.on_budget = 'stop' AND (j.daily_hit OR j.monthly_hit)),
           (SELECT jsonb_object_agg(j.project_id, CASE WHEN j.daily_hit THEN 'daily' ELSE 'monthly' END)
              FROM judged j WHERE j.on_budget = 'stop' AND (j.daily_hit OR j.monthly_hit))
      INTO acted, stop_ids, stop_budgets;
    IF cardinality(acted) > 0 THEN
        PERFORM pg_notify('credits_events', '');
    END IF;

    -- (read after the locks: an instance a start committed meanwhile is stopped too)
    FOR r IN SELECT x.project_id, x.resource_id FROM credits.resources x
              WHERE x.project_id = ANY (stop_ids) AND x.kind = 'instance' AND x.state = 'running'
              ORDER BY x.project_id, x.resource_id
    LOOP
        PERFORM credits._deactivate(r.project_id, r.resource_id, 'instance', 'stopped');
        PERFORM credits._enqueue_event(r.project_id, 'instance_stopped', r.resource_id, NULL,
            jsonb_build_object('resource_id', r.resource_id, 'kind', 'instance', 'reason', 'budget_reached',
                               'budget', stop_budgets ->> r.project_id::text, 'at', at));
        acted := acted || r.project_id;
    END LOOP;
    RETURN ARRAY(SELECT DISTINCT unnest(acted) ORDER BY 1);
END $$;

-- Checks one project's spending controls now (a deposit completed, a configuration saved).
CREATE FUNCTION credits._check_spending(project_id bigint) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    positions credits._spending_positions[];
BEGIN
    SELECT array_agg(p) INTO positions FROM credits._spending_positions p
     WHERE p.project_id = _check_spending.project_id;
    IF positions IS NOT NULL THEN
        PERFORM credits._act_on_spending(positions);
    END IF;
END $$;

-- Checks every watched project, set-based: counts the hours deducted since the last run,
-- computes every position once, and acts on the projects where something is due (an alert
-- line crossed either way, a budget reached and not yet announced this period, or running
-- instances over a budget that stops).  Returns the projects acted on.  The caller holds the
-- periodic-run lock.
CREATE FUNCTION credits._watch_spending(at timestamptz) RETURNS bigint[]
    LANGUAGE plpgsql AS $$
DECLARE
    due credits._spending_positions[];
BEGIN
    IF NOT EXISTS (SELECT FROM credits.spending_controls) THEN
        RETURN '{}';
    END IF;
    PERFORM credits._count_spending();
    SELECT array_agg(p ORDER BY p.project_id) INTO due
      FROM credits._spending_positions p
      JOIN credits.spending_controls c ON c.project_id = p.project_id
     WHERE c.balance_low <> credits._below_balance(p.available_balance, c.below_balance)
        OR c.runway_low <> credits._below_runway(p.available_balance, p.burn_rate, c.below_runway)
        OR (credits._budget_hit(p.spent_today, c.daily_budget) AND c.daily_reached IS DISTINCT FROM p.day_start)
        OR (credits._budget_hit(p.spent_this_month, c.monthly_budget)
            AND c.monthly_reached IS DISTINCT FROM p.month_start)
        OR (c.on_budget = 'stop'
            AND (credits._budget_hit(p.spent_today, c.daily_budget)
                 OR credits._budget_hit(p.spent_this_month, c.monthly_budget))
            AND EXISTS (SELECT FROM credits.resources r
                         WHERE r.project_id = p.project_id AND r.kind = 'instance' AND r.state = 'running'));
    IF due IS NULL THEN
        RETURN '{}';
    END IF;
    RETURN credits._act_on_spending(due);
END $$;
