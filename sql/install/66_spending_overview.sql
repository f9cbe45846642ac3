-- ---------------------------------------------------------------------------------------------
-- What users read about spending controls: one row per project with limits or alerts set.
-- ---------------------------------------------------------------------------------------------

-- One watched project's position, for the view below.  SECURITY DEFINER: readers may not read
-- the tables (a view's own relations are read with its owner's rights, a function's with the
-- caller's).
CREATE FUNCTION credits._spending_position_of(project_id bigint)
    RETURNS TABLE (available_balance credits.credits, burn_rate credits.credits,
                   spent_today credits.credits, spent_this_month credits.credits,
                   day_start timestamptz, month_start timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
BEGIN ATOMIC
    SELECT p.available_balance, p.burn_rate, p.spent_today, p.spent_this_month, p.day_start, p.month_start
      FROM credits._spending_positions(ARRAY[_spending_position_of.project_id]) AS p;
END;

-- The limits and alert lines of each watched project, what it spent in the current UTC day
-- and month (charges of the usage hours beginning in them, collected or not, accumulating
-- included), whether a budget is reached, and which alert line its position is below now
-- ('balance_low' first, then 'runway_low', else 'ok').  Read with a project_id filter, it
-- reads that project's rows only.
CREATE VIEW credits.spending_overview AS
SELECT c.project_id, c.max_burn_rate, c.min_runway, c.daily_budget, p.spent_today,
       c.monthly_budget, p.spent_this_month, c.on_budget,
       credits._budget_hit(p.spent_today, c.daily_budget)
           OR credits._budget_hit(p.spent_this_month, c.monthly_budget) AS budget_reached,
       CASE WHEN credits._below_balance(p.available_balance, c.below_balance) THEN 'balance_low'
            WHEN credits._below_runway(p.available_balance, p.burn_rate, c.below_runway) THEN 'runway_low'
            ELSE 'ok' END AS alert_state,
       c.below_balance, c.below_runway
  FROM credits.spending_controls c
  CROSS JOIN LATERAL credits._spending_position_of(c.project_id) AS p;

COMMENT ON VIEW credits.spending_overview IS
    'One row per project with spending limits or alerts set: the limits, the charges of the current UTC '
    'day and month, whether a budget is reached, and the alert state now (ok, balance_low, runway_low).';
