-- ---------------------------------------------------------------------------------------------
-- Refunds: credits are non-refundable once used.  Only a paid lot (a completed deposit or
-- auto-recharge) can be refunded, and only what usage has not taken and will not take: at most
-- what is left of the lot once the usage accrued and not yet deducted has drawn on it.
-- refund_deposit writes a pending refund that holds its amount (usage no longer draws on it)
-- and queues refund_requested; the payment worker refunds through the provider and calls
-- complete_refund (the lot and the balance go down) or fail_refund (the hold is released).
-- ---------------------------------------------------------------------------------------------

-- The refund an earlier refund_deposit made with this idempotency key, if any; raises when that
-- call had other arguments.
CREATE FUNCTION credits._refund_by_key(project_id bigint, deposit_id bigint, amount credits.credits,
                                       idempotency_key text) RETURNS bigint
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    earlier credits.transactions;
BEGIN
    SELECT * INTO earlier FROM credits.transactions t
     WHERE t.project_id = _refund_by_key.project_id AND t.idempotency_key = _refund_by_key.idempotency_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF earlier.type::text <> 'refund' OR earlier.lot_id <> deposit_id
       OR (amount IS NOT NULL AND -earlier.amount <> amount) THEN
        PERFORM credits._key_reused(idempotency_key, earlier);
    END IF;
    RETURN earlier.transaction_id;
END $$;

-- Raises unless transaction_id is a paid lot of the project (a completed deposit or
-- auto-recharge); returns the lot, locked.
CREATE FUNCTION credits._refundable_lot(project_id bigint, transaction_id bigint) RETURNS credits.credit_lots
    LANGUAGE plpgsql AS $$
DECLARE
    t credits.transactions;
    lot credits.credit_lots;
BEGIN
    IF credits._owner_of(transaction_id) = project_id THEN
        SELECT * INTO lot FROM credits.credit_lots l WHERE l.transaction_id = _refundable_lot.transaction_id
           FOR UPDATE;
        IF FOUND AND lot.kind = 'paid' THEN
            RETURN lot;
        END IF;
    END IF;
    SELECT * INTO t FROM credits.transactions x
     WHERE x.transaction_id = _refundable_lot.transaction_id AND x.type <> 'usage';
    IF NOT FOUND OR t.project_id <> _refundable_lot.project_id THEN
        RAISE EXCEPTION 'project % has no deposit %', project_id, transaction_id USING ERRCODE = 'no_data_found';
    ELSIF FOUND AND lot.kind = 'promotional' THEN
        RAISE EXCEPTION 'transaction % is a grant, and grants are not refundable', transaction_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RAISE EXCEPTION 'cannot refund % %: only completed deposits and auto-recharges can be refunded',
        t.status, t.type USING ERRCODE = 'object_not_in_prerequisite_state';
END $$;

-- Requests a refund of amount (null: all that may be refunded) of the completed deposit or
-- auto-recharge transaction_id: a pending refund transaction (returned) that holds the amount,
-- and a refund_requested event carrying the deposit's method and invoice.  At most what is left
-- of that deposit's credits once the accrued usage has drawn on them may be refunded.  The same
-- idempotency key with the same arguments returns the first refund and writes nothing.
CREATE FUNCTION credits.refund_deposit(project_id bigint, transaction_id bigint, amount credits.credits DEFAULT NULL,
                                       reason text DEFAULT NULL, idempotency_key text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    lot credits.credit_lots;
    deposit credits.transactions;
    method credits.payment_methods;
    refundable credits.credits;
    id bigint;
BEGIN
    PERFORM credits._require_account(project_id);
    PERFORM credits._require('transaction_id', transaction_id IS NULL);
    IF amount IS NOT NULL THEN
        PERFORM credits._require_positive('amount', amount);
    END IF;
    PERFORM credits._require_text('reason', reason, 200);
    PERFORM credits._require_text('idempotency_key', idempotency_key, 200);
    IF idempotency_key IS NOT NULL THEN
        id := credits._refund_by_key(project_id, transaction_id, amount, idempotency_key);
        IF id IS NOT NULL THEN
            RETURN id;
        END IF;
    END IF;

    -- The account first (as the deduction locks it), then the lot.
    PERFORM FROM credits.accounts a WHERE a.project_id = refund_deposit.project_id FOR NO KEY UPDATE;
    lot := credits._refundable_lot(project_id, transaction_id);
    SELECT x.left_over INTO refundable FROM credits._lot_standing x
     WHERE x.project_id = refund_deposit.project_id AND x.transaction_id = lot.transaction_id;
    refundable := coalesce(refundable, '0'::credits.credits);
    IF refundable <= '0'::credits.credits OR amount > refundable THEN
        RAISE EXCEPTION 'deposit % has %', transaction_id,
            CASE WHEN refundable <= '0'::credits.credits THEN 'nothing that may be refunded'
                 ELSE format('%s that may be refunded, not %s', refundable, amount) END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Of its %s, %s remains, %s is held by pending refunds, and usage accrued '
                                  'and not yet deducted takes %s.', lot.amount, lot.remaining, lot.held,
                                  lot.remaining - lot.held - refundable),
                  HINT = 'Credits are non-refundable once used.';
    END IF;
    amount := coalesce(amount, refundable);

    SELECT * INTO deposit FROM credits.transactions t WHERE t.transaction_id = lot.transaction_id AND t.type <> 'usage';
    SELECT * INTO method FROM credits.payment_methods m WHERE m.method_id = deposit.method_id;
    INSERT INTO credits.transactions AS t (project_id, type, status, amount, created_at, description, method_id,
                                           idempotency_key, lot_id)
    VALUES (project_id, 'refund', 'pending', -amount, credits.now(),
            'Refund of ' || CASE deposit.type::text WHEN 'deposit' THEN 'deposit' ELSE 'auto-recharge' END
                || coalesce(' (' || reason || ')', ''),
            deposit.method_id, idempotency_key, lot.transaction_id)
    ON CONFLICT DO NOTHING
    RETURNING t.transaction_id INTO id;
    IF id IS NULL THEN
        -- A concurrent call with the same key committed first: answer as it did.
        RETURN credits._refund_by_key(project_id, transaction_id, amount, idempotency_key);
    END IF;
    UPDATE credits.credit_lots l SET held = l.held + refund_deposit.amount WHERE l.transaction_id = lot.transaction_id;
    PERFORM credits._enqueue_event(project_id, 'refund_requested', NULL, id,
        jsonb_build_object('transaction_id', id, 'amount', amount::text,
                           'deposit_transaction_id', deposit.transaction_id, 'method_id', deposit.method_id,
                           'provider_ref', method.provider_ref, 'invoice_url', deposit.invoice_url,
                           'reason', reason, 'idempotency_key', idempotency_key));
    PERFORM credits._enforce_lots(project_id, credits.now());
    RETURN id;
END $$;

-- Settles a pending refund: pending → completed or failed (with the provider's reason), the
-- hold released; a completed one takes its amount from the lot and the balance.  Returns the
-- refund's amount (negative).
CREATE FUNCTION credits._settle_refund(project_id bigint, transaction_id bigint, completed boolean, reason text)
    RETURNS credits.credits
    LANGUAGE plpgsql AS $$
DECLARE
    refund credits.transactions;
    taken credits.credits;
BEGIN
    PERFORM credits._require('project_id', project_id IS NULL);
    PERFORM credits._require('transaction_id', transaction_id IS NULL);
    PERFORM credits._require_text('reason', reason, 2000);
    PERFORM FROM credits.accounts a WHERE a.project_id = _settle_refund.project_id FOR NO KEY UPDATE;
    IF credits._owner_of(transaction_id) = project_id THEN
        UPDATE credits.transactions t
           SET status = CASE WHEN completed THEN 'completed' ELSE 'failed' END::credits.transaction_status,
               completed_at = CASE WHEN completed THEN credits.now() END,
               failed_at = CASE WHEN NOT completed THEN credits.now() END,
               failure_reason = _settle_refund.reason
         WHERE t.transaction_id = _settle_refund.transaction_id
           AND t.type <> 'usage' AND t.type::text = 'refund' AND t.status = 'pending'
        RETURNING t.* INTO refund;
    END IF;
    IF refund.transaction_id IS NULL THEN
        SELECT * INTO refund FROM credits.transactions t
         WHERE t.transaction_id = _settle_refund.transaction_id AND t.type <> 'usage' AND t.type::text = 'refund';
        IF NOT FOUND OR refund.project_id <> project_id THEN
            RAISE EXCEPTION 'project % has no refund transaction %', project_id, transaction_id
                USING ERRCODE = 'no_data_found';
        END IF;
        RAISE EXCEPTION 'cannot % refund transaction %: it is %', CASE WHEN completed THEN 'complete' ELSE 'fail' END,
            transaction_id, refund.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Only pending refunds can be completed or failed.';
    END IF;
    taken := CASE WHEN completed THEN -refund.amount ELSE '0'::credits.credits END;
    UPDATE credits.credit_lots l
       SET held = l.held + refund.amount, remaining = l.remaining - taken,
           active = l.remaining - taken > '0'::credits.credits,
           ended = CASE WHEN l.remaining - taken = '0'::credits.credits THEN 'refunded' END
     WHERE l.transaction_id = refund.lot_id;
    IF completed THEN
        UPDATE credits.accounts a SET balance = a.balance - taken WHERE a.project_id = _settle_refund.project_id;
    END IF;
    PERFORM credits._enforce_lots(project_id, credits.now());
    RETURN refund.amount;
END $$;

-- pending → completed: the refund is paid out; its amount leaves the lot and the balance.
-- Returns the new balance.
CREATE FUNCTION credits.complete_refund(project_id bigint, transaction_id bigint) RETURNS credits.credits
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
BEGIN
    PERFORM credits._settle_refund(project_id, transaction_id, true, NULL);
    RETURN (SELECT a.balance FROM credits.accounts a WHERE a.project_id = complete_refund.project_id);
END $$;

-- pending → failed, with the provider's reason: the held credits are available again.
CREATE FUNCTION credits.fail_refund(project_id bigint, transaction_id bigint, reason text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
BEGIN
    PERFORM credits._settle_refund(project_id, transaction_id, false, reason);
END $$;

COMMENT ON FUNCTION credits.refund_deposit(bigint, bigint, credits.credits, text, text) IS 'requests a refund of a completed deposit''s unused credits (amount null: all that may be): a pending refund that holds them and a refund_requested event; returns its id; grants are never refundable (credits_app)';
COMMENT ON FUNCTION credits.complete_refund(bigint, bigint) IS 'pending refund to completed: its amount leaves the lot and the balance; returns the new balance (credits_worker)';
COMMENT ON FUNCTION credits.fail_refund(bigint, bigint, text) IS 'pending refund to failed, with the provider''s reason: the held credits are available again (credits_worker)';
