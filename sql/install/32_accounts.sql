-- ---------------------------------------------------------------------------------------------
-- Accounts and payment methods.  provider_ref is the payment provider's own id (for example a
-- Stripe PaymentMethod id); card numbers never reach the database.
-- ---------------------------------------------------------------------------------------------

-- Opens the project's account at balance zero; does nothing when it is already open.  Project
-- ids are positive (22023 otherwise): zero and negative ids are what application code passes
-- by mistake (an unset id, a sign error), and routing by hashint8 needs no other.
CREATE FUNCTION credits.open_account(project_id bigint) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
BEGIN
    PERFORM credits._require('project_id', project_id IS NULL);
    IF project_id < 1 THEN
        RAISE EXCEPTION 'project_id must be positive, got %', project_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO credits.accounts (project_id, opened_at) VALUES (project_id, credits.now())
    ON CONFLICT DO NOTHING;
END $$;

-- Locks the project's account row: payment-method changes of one project run one at a time.
CREATE FUNCTION credits._lock_account(project_id bigint) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM credits._require_account(project_id);
    PERFORM FROM credits.accounts a WHERE a.project_id = _lock_account.project_id FOR UPDATE;
END $$;

-- Raises P0002 unless method_id is an active payment method of the project.
CREATE FUNCTION credits._require_method(project_id bigint, method_id bigint) RETURNS void
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM credits._require('method_id', method_id IS NULL);
    PERFORM FROM credits.payment_methods m
     WHERE m.method_id = _require_method.method_id AND m.project_id = _require_method.project_id
       AND m.removed_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment method % is not an active payment method of project %',
            method_id, project_id USING ERRCODE = 'no_data_found';
    END IF;
END $$;

-- Adds a payment method and returns its id.  Adding the same provider_ref again returns the
-- existing method (a retried call creates nothing).  make_default makes it the default.
CREATE FUNCTION credits.add_payment_method(project_id bigint, provider_ref text, label text DEFAULT NULL,
                                           make_default boolean DEFAULT true) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    id bigint;
BEGIN
    PERFORM credits._require_text('provider_ref', provider_ref, credits._max_id_chars(), nullable => false);
    PERFORM credits._require_text('label', label, credits._max_id_chars());
    PERFORM credits._require('make_default', make_default IS NULL);
    PERFORM credits._lock_account(project_id);

    SELECT m.method_id INTO id FROM credits.payment_methods m
     WHERE m.project_id = add_payment_method.project_id AND m.provider_ref = add_payment_method.provider_ref
       AND m.removed_at IS NULL;
    IF id IS NULL THEN
        INSERT INTO credits.payment_methods (project_id, provider_ref, label, added_at)
        VALUES (project_id, provider_ref, label, credits.now())
        RETURNING method_id INTO id;
    END IF;
    IF make_default THEN
        PERFORM credits.set_default_payment_method(project_id, id);
    END IF;
    RETURN id;
END $$;

-- Makes method_id the project's one default payment method.
CREATE FUNCTION credits.set_default_payment_method(project_id bigint, method_id bigint) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
BEGIN
    PERFORM credits._lock_account(project_id);
    PERFORM credits._require_method(project_id, method_id);
    UPDATE credits.payment_methods m SET is_default = false
     WHERE m.project_id = set_default_payment_method.project_id AND m.is_default
       AND m.method_id <> set_default_payment_method.method_id;
    UPDATE credits.payment_methods m SET is_default = true
     WHERE m.method_id = set_default_payment_method.method_id AND NOT m.is_default;
END $$;

-- Removes a payment method (it stays in history).  A removed default leaves the project with
-- no default.  Refused while enabled auto-recharge charges this method: the one configured,
-- or the default one when none is configured (else it would silently stop recharging).
CREATE FUNCTION credits.remove_payment_method(project_id bigint, method_id bigint) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
BEGIN
    PERFORM credits._lock_account(project_id);
    PERFORM credits._require_method(project_id, method_id);
    PERFORM FROM credits.auto_recharge r
     WHERE r.project_id = remove_payment_method.project_id AND r.enabled
       AND (r.method_id = remove_payment_method.method_id
            OR r.method_id IS NULL AND EXISTS (SELECT FROM credits.payment_methods m
                                                WHERE m.method_id = remove_payment_method.method_id
                                                  AND m.is_default));
    IF FOUND THEN
        RAISE EXCEPTION 'payment method % is used by auto-recharge', method_id
            USING ERRCODE = 'object_in_use',
                  HINT = 'Make another method the default, configure auto-recharge with another '
                         'method, or disable it, first.';
    END IF;
    UPDATE credits.payment_methods m SET removed_at = credits.now(), is_default = false
     WHERE m.method_id = remove_payment_method.method_id;
END $$;
