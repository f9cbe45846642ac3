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

-- Requests the auto-recharges that are due now among the candidates given (credits._due_projects
-- finds them): enabled, armed, none pending, a usable method, and an available balance below
-- the threshold, tested again here with the current balance and the candidate's accrued
-- usage.  One set-based insert of the pending auto_recharge transactions and their
-- charge_requested events, shaped as credits._request_charge shapes them; the unique index
-- leaves out a project whose recharge a concurrent run requested first.  Returns the
-- projects for which a recharge was requested.
CREATE FUNCTION credits._start_auto_recharges(candidate_ids bigint[], candidate_accrued credits.credits[])
    RETURNS bigint[]
    LANGUAGE plpgsql AS $$
DECLARE
    requested_ids bigint[];
BEGIN
    WITH due AS (
        SELECT r.project_id, r.amount, m.method_id, m.provider_ref, m.label
          FROM unnest(candidate_ids, candidate_accrued) AS c(project_id, accrued)
          JOIN credits.auto_recharge r ON r.project_id = c.project_id
          JOIN credits.accounts a ON a.project_id = c.project_id
          JOIN LATERAL (SELECT m.method_id, m.provider_ref, m.label FROM credits.payment_methods m
                         WHERE m.project_id = r.project_id AND m.removed_at IS NULL
                           AND (m.method_id = r.method_id OR (r.method_id IS NULL AND m.is_default))) AS m ON true
         WHERE r.enabled AND r.armed
           AND credits._available(a.balance, c.accrued) < r.threshold
           AND NOT EXISTS (SELECT FROM credits.transactions t
                            WHERE t.project_id = r.project_id AND t.type = 'auto_recharge'
                              AND t.status = 'pending')),
    requested AS (
        INSERT INTO credits.transactions AS t (project_id, type, status, amount, created_at, description, method_id)
        SELECT d.project_id, 'auto_recharge', 'pending', d.amount, credits.now(),
               credits._charge_description('auto_recharge', d.label), d.method_id
          FROM due d ORDER BY d.project_id
        ON CONFLICT DO NOTHING
        RETURNING t.transaction_id, t.project_id, t.amount, t.method_id),
    queued AS (
        INSERT INTO credits.events (project_id, kind, resource_id, transaction_id, payload, created_at)
        SELECT q.project_id, 'charge_requested', NULL, q.transaction_id,
               credits._charge_payload(q.transaction_id, 'auto_recharge', q.amount, q.method_id,
                                       d.provider_ref, NULL),
               credits.now()
          FROM requested q JOIN due d ON d.project_id = q.project_id
         ORDER BY q.transaction_id)
    SELECT coalesce(array_agg(q.project_id ORDER BY q.project_id), '{}') INTO requested_ids FROM requested q;

    IF cardinality(requested_ids) > 0 THEN
        PERFORM pg_notify('credits_events', '');
    END IF;
    RETURN requested_ids;
END $$;
