-- ---------------------------------------------------------------------------------------------
-- Auto-recharge: when enabled and the available balance is below threshold, a pending
-- auto_recharge deposit of amount is requested (charge_requested queued) from the configured
-- method, or the project's default one.  At most one is pending per project (a unique index).
-- A failed auto-recharge disarms it until a deposit completes or the settings are saved again:
-- a declined card is not charged again every minute.
-- ---------------------------------------------------------------------------------------------

-- Saves the project's auto-recharge settings (and re-arms it).
CREATE FUNCTION credits.configure_auto_recharge(project_id bigint, enabled boolean, threshold credits.credits,
                                                amount credits.credits, method_id bigint DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    minimum credits.credits := credits.minimum_deposit();
BEGIN
    PERFORM credits._lock_account(project_id);
    PERFORM credits._require('enabled', enabled IS NULL);
    PERFORM credits._require('threshold', threshold IS NULL);
    IF threshold < '0'::credits.credits THEN
        RAISE EXCEPTION 'threshold must not be negative, got %', threshold
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM credits._require_positive('amount', amount);
    IF amount < minimum THEN
        RAISE EXCEPTION 'auto-recharge amount % is below the minimum deposit of %', amount, minimum
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF method_id IS NOT NULL THEN
        PERFORM credits._require_method(project_id, method_id);
    ELSIF enabled AND NOT EXISTS (SELECT FROM credits.payment_methods m
                                   WHERE m.project_id = configure_auto_recharge.project_id AND m.is_default) THEN
        RAISE EXCEPTION 'project % has no default payment method to recharge from', project_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Add one with credits.add_payment_method(), or pass method_id.';
    END IF;

    INSERT INTO credits.auto_recharge AS r (project_id, enabled, threshold, amount, method_id, armed, updated_at)
    VALUES (project_id, enabled, threshold, amount, method_id, true, credits.now())
    ON CONFLICT ON CONSTRAINT auto_recharge_pkey DO UPDATE
       SET enabled = excluded.enabled, threshold = excluded.threshold, amount = excluded.amount,
           method_id = excluded.method_id, armed = true, updated_at = excluded.updated_at;
END $$;

-- Requests the auto-recharges that are due now: enabled, armed, none pending, a usable
-- method, and an available balance below the threshold.  The caller passes each project's
-- usage accrued and not yet deducted (credits.accumulating_by_project, as two arrays; a
-- project not in them has none), so that a run computes it once.  Returns the projects for
-- which a recharge was requested.
CREATE FUNCTION credits._start_auto_recharges(accumulating_ids bigint[], accumulating_amounts credits.credits[])
    RETURNS bigint[]
    LANGUAGE sql AS $$
    WITH accrued AS (
        SELECT u.project_id, u.amount
          FROM unnest(accumulating_ids, accumulating_amounts) AS u(project_id, amount)),
    due AS (
        SELECT r.project_id, r.amount, coalesce(r.method_id, m.method_id) AS method_id
          FROM credits.auto_recharge r
          JOIN credits.accounts a USING (project_id)
          LEFT JOIN credits.payment_methods m ON m.project_id = r.project_id AND m.is_default
          LEFT JOIN accrued u ON u.project_id = r.project_id
         WHERE r.enabled AND r.armed
           AND greatest(a.balance - coalesce(u.amount, '0'::credits.credits), '0') < r.threshold
           AND NOT EXISTS (SELECT FROM credits.transactions t
                            WHERE t.project_id = r.project_id AND t.type = 'auto_recharge'
                              AND t.status = 'pending')
         ORDER BY r.project_id),
    requested AS (
        SELECT d.project_id,
               credits._request_charge(d.project_id, 'auto_recharge', d.amount, d.method_id, NULL) AS id
          FROM due d
         WHERE d.method_id IS NOT NULL)
    -- (a recharge that a concurrent run requested first is not requested again: null id)
    SELECT coalesce(array_agg(q.project_id ORDER BY q.project_id) FILTER (WHERE q.id IS NOT NULL), '{}')
      FROM requested q;
$$;
