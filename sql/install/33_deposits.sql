-- ---------------------------------------------------------------------------------------------
-- Deposits: pending → completed (the balance rises in the same transaction) | failed.
-- add_credits writes the pending deposit and its charge_requested event together; a payment
-- worker claims the event, charges the provider and calls complete_deposit or fail_deposit.
-- ---------------------------------------------------------------------------------------------

-- The description of a deposit or auto-recharge in the history: its type and the label of
-- the payment method charged.
CREATE FUNCTION credits._charge_description(type credits.transaction_type, label text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE type WHEN 'deposit' THEN 'Deposit' ELSE 'Auto-recharge' END || coalesce(' (' || label || ')', '');

-- What a charge_requested event tells the payment worker: the transaction to settle, its
-- amount, and the provider's payment method to charge.
CREATE FUNCTION credits._charge_payload(transaction_id bigint, type credits.transaction_type,
                                        amount credits.credits, method_id bigint, provider_ref text,
                                        idempotency_key text) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN jsonb_build_object('transaction_id', transaction_id, 'type', type, 'amount', amount::text,
                              'method_id', method_id, 'provider_ref', provider_ref,
                              'idempotency_key', idempotency_key);

-- Writes a pending deposit (or auto-recharge) of amount on method_id and queues its
-- charge_requested event.  Returns the transaction id, or null when the idempotency key is
-- already taken (the caller then looks the key up).
CREATE FUNCTION credits._request_charge(project_id bigint, type credits.transaction_type,
                                        amount credits.credits, method_id bigint,
                                        idempotency_key text) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    method credits.payment_methods;
    new_id bigint;
BEGIN
    SELECT * INTO method FROM credits.payment_methods m WHERE m.method_id = _request_charge.method_id;
    INSERT INTO credits.transactions AS t (project_id, type, status, amount, created_at, description,
                                           method_id, idempotency_key)
    VALUES (project_id, type, 'pending', amount, credits.now(),
            credits._charge_description(type, method.label),
            method_id, idempotency_key)
    ON CONFLICT DO NOTHING
    RETURNING t.transaction_id INTO new_id;
    IF new_id IS NOT NULL THEN
        PERFORM credits._enqueue_event(project_id, 'charge_requested', NULL, new_id,
            credits._charge_payload(new_id, type, amount, method_id, method.provider_ref, idempotency_key));
    END IF;
    RETURN new_id;
END $$;

-- The deposit an earlier add_credits made with this idempotency key, if any; raises when
-- that call had other arguments.
CREATE FUNCTION credits._deposit_by_key(project_id bigint, amount credits.credits, method_id bigint,
                                        idempotency_key text) RETURNS bigint
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    earlier credits.transactions;
BEGIN
    SELECT * INTO earlier FROM credits.transactions t
     WHERE t.project_id = _deposit_by_key.project_id AND t.idempotency_key = _deposit_by_key.idempotency_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF earlier.type <> 'deposit' OR earlier.amount <> amount
       OR (method_id IS NOT NULL AND earlier.method_id <> method_id) THEN
        RAISE EXCEPTION 'idempotency key "%" was already used with other arguments', idempotency_key
            USING ERRCODE = 'unique_violation',
                  DETAIL = format('Transaction %s is a %s of %s on method %s.', earlier.transaction_id,
                                  earlier.type, earlier.amount, earlier.method_id);
    END IF;
    RETURN earlier.transaction_id;
END $$;

-- Records a pending deposit on the given or the default payment method and queues
-- charge_requested.  The same idempotency key with the same arguments returns the first
-- transaction id and writes nothing.
CREATE FUNCTION credits.add_credits(project_id bigint, amount credits.credits, method_id bigint DEFAULT NULL,
                                    idempotency_key text DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    minimum credits.credits := credits.minimum_deposit();
    id bigint;
BEGIN
    PERFORM credits._require_account(project_id);
    PERFORM credits._require_positive('amount', amount);
    PERFORM credits._require_text('idempotency_key', idempotency_key, credits._max_id_chars());

    -- A retry is answered before the minimum is checked: it must get the original id even
    -- when the minimum was raised in between.
    IF idempotency_key IS NOT NULL THEN
        id := credits._deposit_by_key(project_id, amount, method_id, idempotency_key);
        IF id IS NOT NULL THEN
            RETURN id;
        END IF;
    END IF;

    IF amount < minimum THEN
        RAISE EXCEPTION 'deposit of % is below the minimum deposit of %', amount, minimum
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF method_id IS NULL THEN
        SELECT m.method_id INTO method_id FROM credits.payment_methods m
         WHERE m.project_id = add_credits.project_id AND m.is_default;
        IF method_id IS NULL THEN
            RAISE EXCEPTION 'project % has no default payment method', project_id
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Add one with credits.add_payment_method(), or pass method_id.';
        END IF;
    ELSE
        PERFORM credits._require_method(project_id, method_id);
    END IF;

    id := credits._request_charge(project_id, 'deposit', amount, method_id, idempotency_key);
    IF id IS NULL THEN
        -- A concurrent call with the same key committed first: answer as it did.
        id := credits._deposit_by_key(project_id, amount, method_id, idempotency_key);
    END IF;
    RETURN id;
END $$;

-- The project of the transaction transaction_id (a deposit, auto-recharge, grant, expiry or
-- refund), or null.  Calls about one transaction find it by its id alone: the one index that
-- serves that lookup whatever the statistics say (asked by project as well, the planner may
-- read every transaction of the project instead).
CREATE FUNCTION credits._owner_of(transaction_id bigint) RETURNS bigint
    LANGUAGE sql STABLE
    RETURN (SELECT t.project_id FROM credits.transactions t
             WHERE t.transaction_id = _owner_of.transaction_id AND t.type <> 'usage');

-- Explains why a pending deposit could not be found: unknown, wrong project, or finished.
CREATE FUNCTION credits._raise_not_pending(project_id bigint, transaction_id bigint, verb text) RETURNS void
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    t credits.transactions;
BEGIN
    SELECT * INTO t FROM credits.transactions x
     WHERE x.transaction_id = _raise_not_pending.transaction_id AND x.type IN ('deposit', 'auto_recharge');
    IF NOT FOUND OR t.project_id <> project_id THEN
        RAISE EXCEPTION 'project % has no deposit %', project_id, transaction_id
            USING ERRCODE = 'no_data_found';
    END IF;
    RAISE EXCEPTION 'cannot % deposit %: it is %', verb, transaction_id, t.status
        USING ERRCODE = 'object_not_in_prerequisite_state',
              DETAIL = 'Only pending deposits can be completed or failed.';
END $$;

-- pending → completed: raises the balance by the deposit in the same transaction (the deposit
-- becomes a paid lot) and returns the new balance.  A completed deposit re-arms auto-recharge.
CREATE FUNCTION credits.complete_deposit(project_id bigint, transaction_id bigint,
                                         invoice_url text DEFAULT NULL) RETURNS credits.credits
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    deposited credits.credits;
    new_balance credits.credits;
BEGIN
    PERFORM credits._require('project_id', project_id IS NULL);
    PERFORM credits._require('transaction_id', transaction_id IS NULL);
    PERFORM credits._require_text('invoice_url', invoice_url, 2048);

    IF credits._owner_of(transaction_id) = project_id THEN
        UPDATE credits.transactions t
           SET status = 'completed', completed_at = credits.now(), invoice_url = complete_deposit.invoice_url
         WHERE t.transaction_id = complete_deposit.transaction_id
           AND t.type IN ('deposit', 'auto_recharge') AND t.status = 'pending'
        RETURNING t.amount INTO deposited;
    END IF;
    IF deposited IS NULL THEN
        PERFORM credits._raise_not_pending(project_id, transaction_id, 'complete');
    END IF;

    -- (a paid lot: it raises the balance)
    new_balance := credits._add_lot(project_id, transaction_id, 'paid', deposited);
    UPDATE credits.auto_recharge r SET armed = true
     WHERE r.project_id = complete_deposit.project_id AND NOT r.armed;
    PERFORM credits._enforce_lots(project_id, credits.now());
    PERFORM credits._check_spending(project_id);    -- alerts (64_spending_checks.sql)
    RETURN new_balance;
END $$;

-- pending → failed, with the provider's reason.  A failed auto-recharge disarms auto-recharge
-- until a deposit completes or the settings are saved again.
CREATE FUNCTION credits.fail_deposit(project_id bigint, transaction_id bigint, reason text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    failed_type credits.transaction_type;
BEGIN
    PERFORM credits._require('project_id', project_id IS NULL);
    PERFORM credits._require('transaction_id', transaction_id IS NULL);
    PERFORM credits._require_text('reason', reason, 2000);

    IF credits._owner_of(transaction_id) = project_id THEN
        UPDATE credits.transactions t
           SET status = 'failed', failed_at = credits.now(), failure_reason = fail_deposit.reason
         WHERE t.transaction_id = fail_deposit.transaction_id
           AND t.type IN ('deposit', 'auto_recharge') AND t.status = 'pending'
        RETURNING t.type INTO failed_type;
    END IF;
    IF failed_type IS NULL THEN
        PERFORM credits._raise_not_pending(project_id, transaction_id, 'fail');
    END IF;
    IF failed_type = 'auto_recharge' THEN
        UPDATE credits.auto_recharge r SET armed = false WHERE r.project_id = fail_deposit.project_id;
    END IF;
END $$;
