-- ---------------------------------------------------------------------------------------------
-- Spending limits: a ceiling on the burn rate, a minimum runway for new resources, and daily
-- and monthly budgets that alert or stop.  Refusals happen in the start itself
-- (credits._check_start_limits, called by credits._activate); budget events and stops in the
-- periodic runs (64_spending_checks.sql).  Limits only add refusals and stops: the zero-balance
-- rule is unchanged.
-- ---------------------------------------------------------------------------------------------

-- Raises 22023 unless value is null (off) or a positive interval.
CREATE FUNCTION credits._require_positive_interval(arg_name text, value interval) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF value IS NOT NULL AND extract(epoch FROM value) <= 0 THEN
        RAISE EXCEPTION '% must be a positive interval, got %', arg_name, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- Raises 22023 unless amount is null (off) or positive (at most one billion credits).
CREATE FUNCTION credits._require_positive_or_null(arg_name text, amount credits.credits) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF amount IS NOT NULL THEN
        PERFORM credits._require_positive(arg_name, amount);
    END IF;
END $$;

-- Saves the project's spending controls row (creating it and its totals row), or removes
-- both when neither limits nor alerts are left.  The caller holds the account's lock.
CREATE FUNCTION credits._save_spending_controls(project_id bigint, c credits.spending_controls) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF num_nonnulls(c.max_burn_rate, c.min_runway, c.daily_budget, c.monthly_budget,
                    c.below_balance, c.below_runway) = 0 THEN
        DELETE FROM credits.spending_controls x WHERE x.project_id = _save_spending_controls.project_id;
        DELETE FROM credits.spending_totals x WHERE x.project_id = _save_spending_controls.project_id;
        RETURN;
    END IF;
    INSERT INTO credits.spending_controls AS x
    SELECT (c).*
    ON CONFLICT ON CONSTRAINT spending_controls_pkey DO UPDATE
       SET max_burn_rate = excluded.max_burn_rate, min_runway = excluded.min_runway,
           daily_budget = excluded.daily_budget, monthly_budget = excluded.monthly_budget,
           on_budget = excluded.on_budget, below_balance = excluded.below_balance,
           below_runway = excluded.below_runway, daily_reached = excluded.daily_reached,
           monthly_reached = excluded.monthly_reached, balance_low = excluded.balance_low,
           runway_low = excluded.runway_low, updated_at = excluded.updated_at;
    INSERT INTO credits.spending_totals (project_id) VALUES (project_id) ON CONFLICT DO NOTHING;
END $$;

-- Sets the project's spending limits; each call states the whole configuration (null: that
-- limit is off).  A budget whose amount changes may announce itself again in the same period.
CREATE FUNCTION credits.configure_limits(project_id bigint, max_burn_rate credits.credits DEFAULT NULL,
                                         min_runway interval DEFAULT NULL,
                                         daily_budget credits.credits DEFAULT NULL,
                                         monthly_budget credits.credits DEFAULT NULL,
                                         on_budget text DEFAULT 'alert') RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    c credits.spending_controls;
BEGIN
    PERFORM credits._lock_account(project_id);
    PERFORM credits._require_positive_or_null('max_burn_rate', max_burn_rate);
    PERFORM credits._require_positive_interval('min_runway', min_runway);
    PERFORM credits._require_positive_or_null('daily_budget', daily_budget);
    PERFORM credits._require_positive_or_null('monthly_budget', monthly_budget);
    PERFORM credits._require('on_budget', on_budget IS NULL);
    IF on_budget NOT IN ('alert', 'stop') THEN
        RAISE EXCEPTION 'on_budget must be ''alert'' or ''stop'', got "%"', left(on_budget, 20)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT * INTO c FROM credits.spending_controls x WHERE x.project_id = configure_limits.project_id FOR UPDATE;
    c.project_id := project_id;
    c.daily_reached := CASE WHEN c.daily_budget = daily_budget THEN c.daily_reached END;
    c.monthly_reached := CASE WHEN c.monthly_budget = monthly_budget THEN c.monthly_reached END;
    c.max_burn_rate := max_burn_rate;
    c.min_runway := min_runway;
    c.daily_budget := daily_budget;
    c.monthly_budget := monthly_budget;
    c.on_budget := on_budget;
    c.balance_low := coalesce(c.balance_low, false);
    c.runway_low := coalesce(c.runway_low, false);
    c.updated_at := credits.now();
    PERFORM credits._save_spending_controls(project_id, c);
    -- (a budget already reached is announced, and acted on, now)
    PERFORM credits._check_spending(project_id);
END $$;

-- Refuses (55000) a start, attach or rate change of project_id's resource to rate_per_hour
-- (old_rate: its rate while it is billing, else null) that breaks a spending limit: the rates
-- of running instances and accessible volumes above max_burn_rate; an available balance that
-- does not cover the new burn rate for min_runway; an instance start while a budget with
-- on_budget 'stop' is reached.  A change that lowers the rate is never refused.  Called by
-- credits._activate after it locked the account, before it writes anything; it locks the
-- project's controls row, so that concurrent starts of one project check one after the other,
-- each seeing what the one before started.  Under on_budget 'alert' a start that finds a
-- budget reached queues its budget_reached event.  (Generic plans: the position of one project
-- is read through its indexes whatever the project, and planning it for every start cost
-- more than reading it.)
CREATE FUNCTION credits._check_start_limits(project_id bigint, resource_id text, kind text,
                                            rate_per_hour credits.credits, old_rate credits.credits)
    RETURNS void LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    c credits.spending_controls;
    pos record;
    rates credits.credits;
    new_burn credits.credits;
    raises boolean := rate_per_hour > coalesce(old_rate, '0'::credits.credits);
BEGIN
    SELECT * INTO c FROM credits.spending_controls x
     WHERE x.project_id = _check_start_limits.project_id FOR UPDATE;
    IF NOT FOUND OR num_nonnulls(c.max_burn_rate, c.min_runway, c.daily_budget, c.monthly_budget) = 0 THEN
        RETURN;
    END IF;

    IF c.max_burn_rate IS NOT NULL AND raises THEN
        SELECT coalesce(sum(r.rate_per_hour), '0'::credits.credits) INTO rates FROM credits.resources r
         WHERE r.project_id = _check_start_limits.project_id AND r.state IN ('running', 'available')
           AND r.resource_id <> _check_start_limits.resource_id;
        IF rates + rate_per_hour > c.max_burn_rate THEN
            RAISE EXCEPTION 'project % would burn % per hour, above its max_burn_rate of %',
                project_id, rates + rate_per_hour, c.max_burn_rate
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('Running instances and accessible volumes burn %s per hour; %s %s adds %s.',
                                      rates, kind, resource_id, rate_per_hour),
                      HINT = 'Stop something first, or raise the limit with credits.configure_limits().';
        END IF;
    END IF;

    IF c.min_runway IS NULL AND c.daily_budget IS NULL AND c.monthly_budget IS NULL THEN
        RETURN;
    END IF;
    SELECT * INTO pos FROM credits._spending_positions(ARRAY[project_id]);

    IF c.min_runway IS NOT NULL AND raises THEN
        new_burn := pos.burn_rate - coalesce(old_rate, '0'::credits.credits) + rate_per_hour;
        IF credits._below_runway(pos.available_balance, new_burn, c.min_runway) THEN
            RAISE EXCEPTION 'project % would have less than its min_runway of % left', project_id, c.min_runway
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('The available balance of %s lasts %s h at the new burn rate of %s per hour.',
                                      pos.available_balance, round(pos.available_balance / new_burn, 2), new_burn),
                      HINT = 'Add credits first, or lower min_runway with credits.configure_limits().';
        END IF;
    END IF;

    IF kind = 'instance' AND c.on_budget = 'stop' AND raises
       AND (credits._budget_hit(pos.spent_today, c.daily_budget)
           OR credits._budget_hit(pos.spent_this_month, c.monthly_budget)) THEN
        RAISE EXCEPTION 'project % has reached its % budget', project_id,
            CASE WHEN credits._budget_hit(pos.spent_today, c.daily_budget) THEN 'daily' ELSE 'monthly' END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Spent today %s of a daily budget of %s; this month %s of a monthly budget of %s.',
                                  pos.spent_today, coalesce(c.daily_budget::text, 'none'),
                                  pos.spent_this_month, coalesce(c.monthly_budget::text, 'none')),
                  HINT = 'Instances may start again when the UTC period ends or the budget is raised.';
    END IF;
    IF credits._budget_hit(pos.spent_today, c.daily_budget) AND c.daily_reached IS DISTINCT FROM pos.day_start
       OR credits._budget_hit(pos.spent_this_month, c.monthly_budget)
          AND c.monthly_reached IS DISTINCT FROM pos.month_start THEN
        PERFORM credits._act_on_spending(ARRAY[project_id]);
    END IF;
END $$;

COMMENT ON FUNCTION credits.configure_limits(bigint, credits.credits, interval, credits.credits, credits.credits, text) IS
    'Sets a project''s spending limits, the whole configuration at once (null: off): max_burn_rate and '
    'min_runway refuse starts (55000); daily_budget and monthly_budget queue budget_reached once per UTC '
    'period, and with on_budget ''stop'' also stop running instances and refuse starts until the period '
    'ends or the budget is raised.';
