-- ---------------------------------------------------------------------------------------------
-- What users read about spending controls: one row per project with limits or alerts set.
-- ---------------------------------------------------------------------------------------------

-- The limits and alert lines of each watched project, what it spent in the current UTC day
-- and month (charges of the usage hours beginning in them, collected or not, accumulating
-- included), whether a budget is reached, and which alert line its position is below now
-- ('balance_low' first, then 'runway_low', else 'ok').
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
  JOIN credits._spending_positions p ON p.project_id = c.project_id;

COMMENT ON VIEW credits.spending_overview IS
    'One row per project with spending limits or alerts set: the limits, the charges of the current UTC '
    'day and month, whether a budget is reached, and the alert state now (ok, balance_low, runway_low).';
