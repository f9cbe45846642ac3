-- ---------------------------------------------------------------------------------------------
-- Roles and privileges.  Nobody but the owner writes the tables: every change goes through
-- the SECURITY DEFINER functions (search_path pinned).  The roles are cluster-wide and are
-- created only when missing; DROP EXTENSION leaves them.
--   credits_reader  the views
--   credits_app     resources, usage, deposits, refund requests, payment methods, auto-recharge
--                   settings
--   credits_worker  complete/fail deposits and refunds, grants, events, the periodic runs
-- ---------------------------------------------------------------------------------------------

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['credits_reader', 'credits_app', 'credits_worker'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END $$;

-- Internal functions and everything that writes are not for PUBLIC.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'credits'::regnamespace
                -- (record_usage writes in C without SECURITY DEFINER: see 43_record_usage.sql)
                AND (p.proname LIKE '\_%' OR p.prosecdef
                     OR p.proname IN ('schedule_jobs', 'unschedule_jobs', 'record_usage'))
                AND p.proname NOT IN ('_burn_rate_accum', '_burn_rate_combine', '_accrual',
                                      '_accrued_amount', '_hour_segments', '_describe',
                                      '_usage_total', '_units_sum', '_max_id_chars', '_max_amount', '_available',
                                      '_kind_mask', '_lots_left',
                                      -- (spending_overview computes with these)
                                      '_below_balance', '_below_runway', '_budget_hit',
                                      -- minimum_deposit() reads it: a setting anyone may SHOW
                                      '_minimum_deposit_text')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END $$;

GRANT USAGE ON SCHEMA credits TO credits_reader, credits_app, credits_worker;
GRANT credits_reader TO credits_app, credits_worker;

GRANT SELECT ON credits.balance_overview, credits.transaction_history, credits.resource_overview,
                credits.payment_method_overview,
                credits.usage_in_progress, credits.accumulating_by_project,
                credits.spending_overview, credits.lots, credits.billing_errors TO credits_reader;
GRANT EXECUTE ON FUNCTION credits.verify(bigint), credits.available_balance(bigint),
                          credits._accumulating(bigint), credits._burn_rate_of(bigint),
                          credits._unfolded_usage(bigint),
                          credits._spending_position_of(bigint) TO credits_reader;
GRANT EXECUTE ON FUNCTION credits._lots_available(bigint),
                          credits._lots_paid_for(bigint, timestamptz[], integer[], credits.credits[]) TO credits_reader;
GRANT EXECUTE ON FUNCTION credits.statement(bigint, timestamptz, timestamptz),
                          credits.usage_by_resource(bigint, timestamptz, timestamptz, interval) TO credits_reader;

GRANT EXECUTE ON FUNCTION
    credits.open_account(bigint),
    credits.add_payment_method(bigint, text, text, boolean),
    credits.set_default_payment_method(bigint, bigint),
    credits.remove_payment_method(bigint, bigint),
    credits.add_credits(bigint, credits.credits, bigint, text),
    credits.start_instance(bigint, text, credits.credits),
    credits.stop_instance(bigint, text),
    credits.attach_volume(bigint, text, credits.credits),
    credits.delete_volume(bigint, text),
    credits.record_usage(bigint, text, credits.credits, text),
    credits.record_usage_batch(bigint[], text[], credits.credits[], text[]),
    credits.configure_auto_recharge(bigint, boolean, credits.credits, credits.credits, bigint),
    credits.configure_limits(bigint, credits.credits, interval, credits.credits, credits.credits, text),
    credits.configure_alerts(bigint, credits.credits, interval),
    credits.refund_deposit(bigint, bigint, credits.credits, text, text)
  TO credits_app;

GRANT EXECUTE ON FUNCTION
    credits.complete_deposit(bigint, bigint, text),
    credits.fail_deposit(bigint, bigint, text),
    credits.grant_credits(bigint, credits.credits, timestamptz, integer, text[], text, text),
    credits.complete_refund(bigint, bigint),
    credits.fail_refund(bigint, bigint, text),
    credits.claim_events(integer),
    credits.ack_event(bigint),
    credits.run_hourly_deductions(),
    credits.run_balance_checks(),
    credits.run_usage_summaries(integer)
  TO credits_worker;

-- pg_dump keeps the rows of every table and the position of every sequence.
SELECT pg_catalog.pg_extension_config_dump('credits.accounts', '');
SELECT pg_catalog.pg_extension_config_dump('credits.payment_methods', '');
SELECT pg_catalog.pg_extension_config_dump('credits.payment_methods_method_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('credits.transactions', '');
SELECT pg_catalog.pg_extension_config_dump('credits.transactions_transaction_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('credits.events', '');
SELECT pg_catalog.pg_extension_config_dump('credits.events_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('credits.resources', '');
SELECT pg_catalog.pg_extension_config_dump('credits.usage_events', '');
SELECT pg_catalog.pg_extension_config_dump('credits.usage_rollup', '');
SELECT pg_catalog.pg_extension_config_dump('credits.usage_keys', '');
SELECT pg_catalog.pg_extension_config_dump('credits.auto_recharge', '');
SELECT pg_catalog.pg_extension_config_dump('credits.credit_lots', '');
SELECT pg_catalog.pg_extension_config_dump('credits.spending_controls', '');
SELECT pg_catalog.pg_extension_config_dump('credits.spending_totals', '');
SELECT pg_catalog.pg_extension_config_dump('credits.volume_deletion_warnings', '');
SELECT pg_catalog.pg_extension_config_dump('credits.usage_days', '');
SELECT pg_catalog.pg_extension_config_dump('credits.usage_days_summarized', '');
