-- ---------------------------------------------------------------------------------------------
-- What \df+, \dv+, \dT+ and \du+ show: a description of every public object.  (Objects whose
-- name starts with an underscore are internal.)  Objects added later carry their COMMENT where
-- they are created; regress test comments lists any public object without one.
-- ---------------------------------------------------------------------------------------------

COMMENT ON SCHEMA credits IS 'credits: prepaid credit billing (balances, deposits, hourly usage deductions, zero-balance enforcement)';

-- the type
COMMENT ON TYPE credits.credits IS 'exact amount of credits (1 credit = 1 USD): a signed 64-bit count of micro-credits, 6 fraction digits, rounding half to even';
COMMENT ON FUNCTION credits.credits_in(cstring) IS 'text input of credits: optional sign, digits, optional point and 1-6 digits (22P02 otherwise, 22003 out of range)';
COMMENT ON FUNCTION credits.credits_out(credits.credits) IS 'text output of credits: 2 to 6 fraction digits, locale-independent';
COMMENT ON FUNCTION credits.credits_recv(internal) IS 'binary input of credits: exactly 8 bytes, big-endian';
COMMENT ON FUNCTION credits.credits_send(credits.credits) IS 'binary output of credits: 8 bytes, big-endian';
COMMENT ON FUNCTION credits.credits_pl(credits.credits, credits.credits) IS 'implements credits + credits (22003 on overflow)';
COMMENT ON FUNCTION credits.credits_mi(credits.credits, credits.credits) IS 'implements credits - credits (22003 on overflow)';
COMMENT ON FUNCTION credits.credits_um(credits.credits) IS 'implements unary minus (22003 for the smallest value)';
COMMENT ON FUNCTION credits.credits_up(credits.credits) IS 'implements unary plus';
COMMENT ON FUNCTION credits.abs(credits.credits) IS 'absolute value of an amount (22003 for the smallest value)';
COMMENT ON FUNCTION credits.credits_mul_numeric(credits.credits, numeric) IS 'implements credits * numeric, rounded half to even';
COMMENT ON FUNCTION credits.numeric_mul_credits(numeric, credits.credits) IS 'implements numeric * credits, rounded half to even';
COMMENT ON FUNCTION credits.credits_mul_int4(credits.credits, integer) IS 'implements credits * integer (22003 on overflow)';
COMMENT ON FUNCTION credits.int4_mul_credits(integer, credits.credits) IS 'implements integer * credits (22003 on overflow)';
COMMENT ON FUNCTION credits.credits_mul_int8(credits.credits, bigint) IS 'implements credits * bigint (22003 on overflow)';
COMMENT ON FUNCTION credits.int8_mul_credits(bigint, credits.credits) IS 'implements bigint * credits (22003 on overflow)';
COMMENT ON FUNCTION credits.credits_div_numeric(credits.credits, numeric) IS 'implements credits / numeric, rounded half to even (22012 by zero)';
COMMENT ON FUNCTION credits.credits_div_int4(credits.credits, integer) IS 'implements credits / integer, rounded half to even (22012 by zero)';
COMMENT ON FUNCTION credits.credits_div_int8(credits.credits, bigint) IS 'implements credits / bigint, rounded half to even (22012 by zero)';
COMMENT ON FUNCTION credits.credits_div_credits(credits.credits, credits.credits) IS 'implements credits / credits: their ratio as numeric (22012 by zero)';
COMMENT ON FUNCTION credits.numeric_mul_int4(numeric, integer) IS 'numeric * integer as PostgreSQL computes it (keeps the pair unambiguous with credits on the search_path)';
COMMENT ON FUNCTION credits.int4_mul_numeric(integer, numeric) IS 'integer * numeric as PostgreSQL computes it (keeps the pair unambiguous with credits on the search_path)';
COMMENT ON FUNCTION credits.numeric_mul_int8(numeric, bigint) IS 'numeric * bigint as PostgreSQL computes it (keeps the pair unambiguous with credits on the search_path)';
COMMENT ON FUNCTION credits.int8_mul_numeric(bigint, numeric) IS 'bigint * numeric as PostgreSQL computes it (keeps the pair unambiguous with credits on the search_path)';
COMMENT ON FUNCTION credits.numeric_div_int4(numeric, integer) IS 'numeric / integer as PostgreSQL computes it (keeps the pair unambiguous with credits on the search_path)';
COMMENT ON FUNCTION credits.int4_div_numeric(integer, numeric) IS 'integer / numeric as PostgreSQL computes it (keeps the pair unambiguous with credits on the search_path)';
COMMENT ON FUNCTION credits.numeric_div_int8(numeric, bigint) IS 'numeric / bigint as PostgreSQL computes it (keeps the pair unambiguous with credits on the search_path)';
COMMENT ON FUNCTION credits.int8_div_numeric(bigint, numeric) IS 'bigint / numeric as PostgreSQL computes it (keeps the pair unambiguous with credits on the search_path)';
COMMENT ON FUNCTION credits.credits(numeric) IS 'numeric to credits, rounded half to even (NaN and infinities refused)';
COMMENT ON FUNCTION credits.credits(numeric, integer, boolean) IS 'the cast numeric to credits: ::credits rounds half to even; implicitly or on assignment a value that would round is refused (22023)';
COMMENT ON FUNCTION credits.credits(integer) IS 'the cast integer to credits: whole credits';
COMMENT ON FUNCTION credits.credits(bigint) IS 'the cast bigint to credits: whole credits (22003 out of range)';
COMMENT ON FUNCTION credits."numeric"(credits.credits) IS 'the cast credits to numeric: exact, with the fraction digits the text form shows';
COMMENT ON FUNCTION credits.credits_eq(credits.credits, credits.credits) IS 'implements credits = credits';
COMMENT ON FUNCTION credits.credits_ne(credits.credits, credits.credits) IS 'implements credits <> credits';
COMMENT ON FUNCTION credits.credits_lt(credits.credits, credits.credits) IS 'implements credits < credits';
COMMENT ON FUNCTION credits.credits_le(credits.credits, credits.credits) IS 'implements credits <= credits';
COMMENT ON FUNCTION credits.credits_gt(credits.credits, credits.credits) IS 'implements credits > credits';
COMMENT ON FUNCTION credits.credits_ge(credits.credits, credits.credits) IS 'implements credits >= credits';
COMMENT ON FUNCTION credits.credits_cmp(credits.credits, credits.credits) IS 'btree comparison of credits';
COMMENT ON FUNCTION credits.credits_sortsupport(internal) IS 'btree sort support of credits';
COMMENT ON FUNCTION credits.credits_hash(credits.credits) IS 'hash of credits (hash indexes, hash joins)';
COMMENT ON FUNCTION credits.credits_hash_extended(credits.credits, bigint) IS 'seeded hash of credits (hash partitioning)';
COMMENT ON FUNCTION credits.credits_smaller(credits.credits, credits.credits) IS 'the smaller of two amounts (min)';
COMMENT ON FUNCTION credits.credits_larger(credits.credits, credits.credits) IS 'the larger of two amounts (max)';
COMMENT ON FUNCTION credits.credits_agg_accum(internal, credits.credits) IS 'state function of sum and avg over credits (exact 128-bit sum)';
COMMENT ON FUNCTION credits.credits_agg_accum_inv(internal, credits.credits) IS 'inverse state function of sum and avg over credits (moving windows)';
COMMENT ON FUNCTION credits.credits_agg_combine(internal, internal) IS 'combines partial sums of credits (parallel aggregation)';
COMMENT ON FUNCTION credits.credits_agg_serialize(internal) IS 'serializes a partial sum of credits (parallel aggregation)';
COMMENT ON FUNCTION credits.credits_agg_deserialize(bytea, internal) IS 'deserializes a partial sum of credits (parallel aggregation)';
COMMENT ON FUNCTION credits.credits_sum_final(internal) IS 'final function of sum over credits (22003 out of range)';
COMMENT ON FUNCTION credits.credits_avg_final(internal) IS 'final function of avg over credits, rounded half to even';
COMMENT ON AGGREGATE credits.sum(credits.credits) IS 'exact sum of amounts (22003 when it leaves the range)';
COMMENT ON AGGREGATE credits.avg(credits.credits) IS 'exact average of amounts, rounded half to even';
COMMENT ON AGGREGATE credits.min(credits.credits) IS 'smallest amount';
COMMENT ON AGGREGATE credits.max(credits.credits) IS 'largest amount';

-- time and settings
COMMENT ON FUNCTION credits.now() IS 'billing time: now(), or the timestamptz in the superuser-only setting credits.clock';
COMMENT ON FUNCTION credits.minimum_deposit() IS 'the smallest deposit and auto-recharge amount (setting credits.minimum_deposit, default 5.00)';
COMMENT ON FUNCTION credits.event_lease() IS 'how long a claimed event stays with its worker (setting credits.event_lease, default 5 minutes)';
COMMENT ON FUNCTION credits.hour_of(timestamptz) IS 'start of the UTC hour that a time falls in (billing hours are UTC hours)';

-- accounts and payment methods
COMMENT ON FUNCTION credits.open_account(bigint) IS 'opens a project''s account at balance zero; does nothing when it is open (credits_app)';
COMMENT ON FUNCTION credits.add_payment_method(bigint, text, text, boolean) IS 'adds a payment method by the provider''s id (never a card number) and returns its id; optionally the default (credits_app)';
COMMENT ON FUNCTION credits.set_default_payment_method(bigint, bigint) IS 'makes a payment method the project''s one default (credits_app)';
COMMENT ON FUNCTION credits.remove_payment_method(bigint, bigint) IS 'removes a payment method (kept in history); refused while auto-recharge charges it (credits_app)';

-- deposits
COMMENT ON FUNCTION credits.add_credits(bigint, credits.credits, bigint, text) IS 'requests a deposit: a pending transaction and a charge_requested event; returns its id; idempotent by key (credits_app)';
COMMENT ON FUNCTION credits.complete_deposit(bigint, bigint, text) IS 'pending deposit or auto-recharge to completed: raises the balance now; returns the new balance (credits_worker)';
COMMENT ON FUNCTION credits.fail_deposit(bigint, bigint, text) IS 'pending deposit or auto-recharge to failed, with the provider''s reason (credits_worker)';

-- events
COMMENT ON FUNCTION credits.claim_events(integer) IS 'hands up to max_events unacknowledged events to one worker for credits.event_lease (credits_worker)';
COMMENT ON FUNCTION credits.ack_event(bigint) IS 'marks a claimed event as done (credits_worker)';

-- resources and usage
COMMENT ON FUNCTION credits.start_instance(bigint, text, credits.credits) IS 'starts, restarts or re-rates an instance billed per microsecond at rate_per_hour; refused without available balance (credits_app)';
COMMENT ON FUNCTION credits.stop_instance(bigint, text) IS 'stops a running instance and books its time; it may be started again (credits_app)';
COMMENT ON FUNCTION credits.attach_volume(bigint, text, credits.credits) IS 'attaches a volume billed per microsecond at rate_per_hour while accessible; refused without available balance (credits_app)';
COMMENT ON FUNCTION credits.delete_volume(bigint, text) IS 'deletes a volume and books its time; its id cannot be used again (credits_app)';
COMMENT ON FUNCTION credits.record_usage(bigint, text, credits.credits, text) IS 'records one API call''s charge against a product id in the current UTC hour; a repeated key is counted once (credits_app)';
COMMENT ON FUNCTION credits.record_usage_batch(bigint[], text[], credits.credits[], text[]) IS 'records many API calls at once, all or nothing; returns the elements taken (credits_app)';
COMMENT ON FUNCTION credits.available_balance(bigint) IS 'what a project can still spend: what its lots not expired have left once the usage accrued and not yet deducted has drawn on them, less pending refunds (without grants or refunds: the balance less the accrued usage), never below zero';
COMMENT ON FUNCTION credits.configure_auto_recharge(bigint, boolean, credits.credits, credits.credits, bigint) IS 'saves auto-recharge: below threshold, charge amount to the given or default method; re-arms it (credits_app)';

-- periodic work
COMMENT ON FUNCTION credits.run_hourly_deductions() IS 'deducts every ended usage hour not yet deducted, exactly once; returns the usage transactions completed (hourly, credits_worker)';
COMMENT ON FUNCTION credits.run_balance_checks() IS 'cuts off projects whose accrued usage used up their balance and starts due auto-recharges; returns the projects acted on (every minute, credits_worker)';
COMMENT ON FUNCTION credits.run_usage_summaries(integer) IS 'sums each whole UTC day a project has deducted into credits.usage_days, which statements read, the oldest day first, at most max_days days per call; returns the project-days summed (hourly, credits_worker)';
COMMENT ON TABLE credits.usage_days IS 'per project, UTC day and resource: what its completed usage took from the balance (amount, negative) and what the balance could not pay (uncollected); written by run_usage_summaries, and summed again from a day that a late API call adds to';
COMMENT ON TABLE credits.usage_days_summarized IS 'per project: the whole days [summarized_from, summarized_until) summed in credits.usage_days';
COMMENT ON FUNCTION credits.schedule_jobs() IS 'registers the two periodic runs as named pg_cron jobs (or says how, without pg_cron here)';
COMMENT ON FUNCTION credits.unschedule_jobs() IS 'removes the pg_cron jobs that schedule_jobs registered';

-- reading
COMMENT ON FUNCTION credits.verify(bigint) IS 'checks the ledger''s invariants for one project or all; no rows when every one holds';
COMMENT ON AGGREGATE credits.burn_rate(credits.credits, interval) IS 'credits per hour of amounts charged over periods (running rates and last hour''s API usage)';
COMMENT ON VIEW credits.balance_overview IS 'one row per project: balance, accumulating usage, available balance, burn rate per hour, hours remaining, auto-recharge';
COMMENT ON VIEW credits.transaction_history IS 'one row per transaction, newest first: date, type, description, invoice, signed amount, status, uncollected';
COMMENT ON VIEW credits.payment_method_overview IS 'one row per payment method ever added: provider id, label, whether it is the default, whether it was removed';
COMMENT ON VIEW credits.resource_overview IS 'one row per instance or volume ever started or attached, with its state and rate';
COMMENT ON VIEW credits.usage_in_progress IS 'usage not yet deducted, per project, resource and UTC hour';
COMMENT ON VIEW credits.accumulating_by_project IS 'usage not yet deducted, in total per project';
COMMENT ON TYPE credits.transaction_type IS 'what a transaction is: deposit, usage, auto_recharge, grant, expiry, refund';
COMMENT ON TYPE credits.transaction_status IS 'where a transaction is: pending, completed, failed (deposits, refunds); accumulating, completed (usage)';

-- roles
COMMENT ON ROLE credits_reader IS 'credits: reads the views, verify() and available_balance()';
COMMENT ON ROLE credits_app IS 'credits: reader, plus accounts, payment methods, deposits, refund requests, resources, usage and settings';
COMMENT ON ROLE credits_worker IS 'credits: reader, plus completing and failing deposits and refunds, grants, the events outbox and the periodic runs';
