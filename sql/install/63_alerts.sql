-- ---------------------------------------------------------------------------------------------
-- Alerts: balance_low when the available balance falls below below_balance, runway_low when
-- hours_remaining falls below below_runway, each once per crossing, and balance_recovered
-- once when, after an alert, both are clear again.  Checked by run_balance_checks, the hourly
-- deduction and deposit completion (64_spending_checks.sql).
-- ---------------------------------------------------------------------------------------------

-- Sets the project's alert lines; each call states the whole configuration (null: off).
-- Saving them keeps what was announced: a line still crossed is not announced again.
CREATE FUNCTION credits.configure_alerts(project_id bigint, below_balance credits.credits DEFAULT NULL,
                                         below_runway interval DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    c credits.spending_controls;
BEGIN
    PERFORM credits._lock_account(project_id);
    PERFORM credits._require_positive_or_null('below_balance', below_balance);
    PERFORM credits._require_positive_interval('below_runway', below_runway);

    SELECT * INTO c FROM credits.spending_controls x WHERE x.project_id = configure_alerts.project_id FOR UPDATE;
    c.project_id := project_id;
    c.on_budget := coalesce(c.on_budget, 'alert');
    c.below_balance := below_balance;
    c.below_runway := below_runway;
    c.balance_low := coalesce(c.balance_low AND below_balance IS NOT NULL, false);
    c.runway_low := coalesce(c.runway_low AND below_runway IS NOT NULL, false);
    c.updated_at := credits.now();
    PERFORM credits._save_spending_controls(project_id, c);
    -- (a line already crossed is announced now, not at the next check)
    PERFORM credits._check_spending(project_id);
END $$;

COMMENT ON FUNCTION credits.configure_alerts(bigint, credits.credits, interval) IS
    'Sets a project''s alert lines (null: off): balance_low below below_balance, runway_low below '
    'below_runway of hours remaining, each queued once per crossing, and balance_recovered once when both '
    'are clear again.';
