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

-- Whether a watched project's controls c call for action at this position: an alert line
-- crossed either way since it was last announced, a budget reached and not announced in its
-- current UTC period (the day from day_start, the month from month_start), or a budget that
-- stops reached while instances run (running).  The periodic runs act
-- (credits._act_on_spending) on the projects it holds for.
CREATE FUNCTION credits._spending_due(c credits.spending_controls, available credits.credits,
                                      burn_rate credits.credits, spent_today credits.credits,
                                      spent_this_month credits.credits, day_start timestamptz,
                                      month_start timestamptz, running boolean) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    RETURN c.balance_low <> credits._below_balance(available, c.below_balance)
        OR c.runway_low <> credits._below_runway(available, burn_rate, c.below_runway)
        OR (credits._budget_hit(spent_today, c.daily_budget) AND c.daily_reached IS DISTINCT FROM day_start)
        OR (credits._budget_hit(spent_this_month, c.monthly_budget) AND c.monthly_reached IS DISTINCT FROM month_start)
        OR (c.on_budget = 'stop'
            AND (credits._budget_hit(spent_today, c.daily_budget)
                 OR credits._budget_hit(spent_this_month, c.monthly_budget))
            AND running);

-- hours_remaining as balance_overview shows it (null when nothing burns).
CREATE FUNCTION credits._hours_remaining(available credits.credits, burn_rate credits.credits) RETURNS numeric
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN burn_rate > '0'::credits.credits THEN round(available / burn_rate, 2) END;

-- Stops, at time at, the running instances of the projects given (each with the budget that
-- stopped it), in three statements for all of them: their time is booked up to at as
-- stop_instance books it (credits._book_usage, here for many resources at once), they become
-- stopped, and instance_stopped is queued for each.  (Per instance, each booking's statement
-- cost as much as reading every account.)  The caller holds the projects' accounts.
CREATE FUNCTION credits._stop_for_budget(project_ids bigint[], budgets text[], at timestamptz)
    RETURNS void LANGUAGE sql AS $$
    WITH stopping AS (
        SELECT r.project_id, r.resource_id, r.rate_per_hour, r.accrued_until, x.budget
          FROM unnest(project_ids, budgets) AS x(project_id, budget)
          JOIN credits.resources r ON r.project_id = x.project_id
         WHERE r.kind = 'instance' AND r.state = 'running'
         ORDER BY r.project_id, r.resource_id
         FOR UPDATE OF r),
    booked AS (
        INSERT INTO credits.transactions AS t (project_id, type, status, amount, created_at, description,
                                               resource_id, usage_hour, accrued_units)
        SELECT x.project_id, 'usage', 'accumulating', -credits._accrued_amount(s.units), s.usage_hour,
               credits._describe('instance', x.resource_id), x.resource_id, s.usage_hour, s.units
          FROM stopping x
          JOIN credits.accounts a ON a.project_id = x.project_id
          CROSS JOIN LATERAL credits._hour_segments(x.rate_per_hour, greatest(x.accrued_until, a.deducted_until), at) AS s
        ON CONFLICT (project_id, usage_hour, resource_id) WHERE type = 'usage' DO UPDATE
           SET accrued_units = t.accrued_units + excluded.accrued_units,
               amount = -credits._accrued_amount(t.accrued_units + excluded.accrued_units)),
    stopped AS (
        UPDATE credits.resources r SET state = 'stopped', state_since = at, accrued_until = NULL
          FROM stopping x
         WHERE r.project_id = x.project_id AND r.resource_id = x.resource_id
        RETURNING r.project_id, r.resource_id, x.budget)
    INSERT INTO credits.events (project_id, kind, resource_id, transaction_id, payload, created_at)
    SELECT x.project_id, 'instance_stopped', x.resource_id, NULL,
           jsonb_build_object('resource_id', x.resource_id, 'kind', 'instance', 'reason', 'budget_reached',
                              'budget', x.budget, 'at', at), at
      FROM stopped x ORDER BY x.project_id, x.resource_id;
$$;

-- Acts on the watched projects among ids: queues the events their controls call for, records
-- them, and stops the running instances of projects over a budget with on_budget 'stop'.  The
-- balance is read again under the account's lock (when the project's lots are all alike).
-- Returns the projects acted on.  (Custom plans: ids is then a constant, which every scan tests
-- through a hash; a generic plan searches it element by element for every row.)
CREATE FUNCTION credits._act_on_spending(ids bigint[]) RETURNS bigint[]
    LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    at timestamptz := credits.now();
    queued_ids bigint[];
    stop_ids bigint[];
    stop_budgets text[];
BEGIN
    WITH pos AS (
        SELECT * FROM credits._spending_positions(ids)),
    locked_accounts AS (
        SELECT a.project_id, a.balance FROM credits.accounts a
         WHERE a.project_id = ANY (ids)
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
          -- (the balance as locked; lots that are not all alike as the positions read them)
          CROSS JOIN LATERAL (SELECT CASE WHEN p.lots_alike THEN credits._available(l.balance, p.accumulating)
                                          ELSE p.available_balance END AS available) AS v),
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
           coalesce(array_agg(j.project_id ORDER BY j.project_id), '{}'),
           coalesce(array_agg(CASE WHEN j.daily_hit THEN 'daily' ELSE 'monthly' END ORDER BY j.project_id), '{}')
      INTO queued_ids, stop_ids, stop_budgets
      FROM judged j
     WHERE j.on_budget = 'stop' AND (j.daily_hit OR j.monthly_hit);
    IF cardinality(queued_ids) > 0 THEN
        PERFORM pg_notify('credits_events', '');
    END IF;

    -- (a new statement, after the locks: an instance a start committed meanwhile is stopped too)
    SELECT coalesce(array_agg(x.project_id ORDER BY x.project_id), '{}'), coalesce(array_agg(x.budget ORDER BY x.project_id), '{}')
      INTO stop_ids, stop_budgets
      FROM unnest(stop_ids, stop_budgets) AS x(project_id, budget)
     WHERE EXISTS (SELECT FROM credits.resources r
                    WHERE r.project_id = x.project_id AND r.kind = 'instance' AND r.state = 'running');
    IF cardinality(stop_ids) > 0 THEN
        PERFORM credits._stop_for_budget(stop_ids, stop_budgets, at);
        PERFORM pg_notify('credits_events', '');
    END IF;
    RETURN ARRAY(SELECT unnest(queued_ids) UNION SELECT unnest(stop_ids) ORDER BY 1);
END $$;

-- Checks one project's spending controls now (a deposit completed, a configuration saved).
CREATE FUNCTION credits._check_spending(project_id bigint) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM credits.spending_controls c WHERE c.project_id = _check_spending.project_id) THEN
        PERFORM credits._act_on_spending(ARRAY[project_id]);
    END IF;
END $$;

-- Checks every watched project, set-based: counts the hours deducted since the last run,
-- computes every watched project's position once, and acts on those where something is due
-- (credits._spending_due).  Returns the projects acted on.  The caller holds the periodic-run
-- lock.  (The balance check finds its candidates in its pass over every project,
-- credits._due_projects; the hourly deduction calls this.  enable_nestloop = off: the planner
-- expects a few hundred watched projects and loops over each part once per project,
-- recomputing it: at 20,000 projects 10 s instead of 0.1 s.  The per-project probes are lateral
-- and stay loops.)
CREATE FUNCTION credits._watch_spending(at timestamptz) RETURNS bigint[]
    LANGUAGE plpgsql SET enable_nestloop = off AS $$
DECLARE
    due bigint[];
BEGIN
    IF NOT EXISTS (SELECT FROM credits.spending_controls) THEN
        RETURN '{}';
    END IF;
    PERFORM credits._count_spending();
    -- (the ids as a constant: see credits._count_spending)
    EXECUTE format($due$
    SELECT array_agg(p.project_id ORDER BY p.project_id)
      FROM credits._spending_positions(%L::bigint[]) p
      JOIN credits.spending_controls c ON c.project_id = p.project_id
     WHERE credits._spending_due(c, p.available_balance, p.burn_rate, p.spent_today, p.spent_this_month,
                                 p.day_start, p.month_start,
                                 EXISTS (SELECT FROM credits.resources r
                                          WHERE r.project_id = p.project_id AND r.kind = 'instance'
                                            AND r.state = 'running'))
    $due$, credits._watched_projects()) INTO due;
    IF due IS NULL THEN
        RETURN '{}';
    END IF;
    RETURN credits._act_on_spending(due);
END $$;
