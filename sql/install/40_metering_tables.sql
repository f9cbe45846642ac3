-- ---------------------------------------------------------------------------------------------
-- Metered resources and API usage.
--
-- Two clocks say which billable time is already in usage transactions:
--   * accounts.deducted_until, per project: every hour before it has been deducted
--     (run_hourly_deductions moves it to the current hour, in the update that debits the account);
--   * resources.accrued_until, per resource: set while an instance runs or a volume is
--     accessible (null otherwise) to where its own booking got to (start, restart, rate change).
-- A billing resource's time before greatest(accrued_until, deducted_until) is booked; the time
-- after it accrues "live".  Booking happens when a resource stops, changes rate or is cut off,
-- and for every billing resource at the hour boundary, when run_hourly_deductions writes each
-- ended hour once, completed, and moves each project's clock instead of a million resources'.
--
-- API usage is appended to usage_events by record_usage (no shared row is updated per call),
-- folded every minute into usage_rollup (one row per project, product and hour), and written
-- into its usage transaction, completed, by the deduction of its hour (src/deduction.c).
-- ---------------------------------------------------------------------------------------------

CREATE TABLE credits.resources (
    project_id    bigint NOT NULL REFERENCES credits.accounts,
    resource_id   text NOT NULL CHECK (length(resource_id) BETWEEN 1 AND credits._max_id_chars()),
    kind          text NOT NULL CHECK (kind IN ('instance', 'volume')),
    state         text NOT NULL,
    rate_per_hour credits.credits NOT NULL CHECK (rate_per_hour > '0'::credits.credits),
    state_since   timestamptz NOT NULL,
    accrued_until timestamptz,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (project_id, resource_id),
    CONSTRAINT state_of_kind CHECK (
        kind = 'instance' AND state IN ('running', 'stopped', 'terminated')
        OR kind = 'volume' AND state IN ('available', 'inaccessible', 'deleted')),
    CONSTRAINT billing_clock_while_billable CHECK (
        (accrued_until IS NOT NULL) = (state IN ('running', 'available')))
);
-- The billing resources in project order, with all the hourly run reads of them: it finds
-- the due projects and streams their resources from this index alone (12% less CPU per run
-- than reading the rows).
CREATE INDEX resources_billing ON credits.resources (project_id)
    INCLUDE (resource_id, kind, rate_per_hour, accrued_until) WHERE accrued_until IS NOT NULL;

-- Recorded API usage not yet folded into its usage transaction.  Append-only between folds.
CREATE TABLE credits.usage_events (
    project_id  bigint NOT NULL,
    resource_id text NOT NULL,
    usage_hour  timestamptz NOT NULL,
    amount      credits.credits NOT NULL CHECK (amount > '0'::credits.credits)
);
-- (Without deduplication: one busy project's calls all carry the same key, and merging them
-- into posting lists each time a page fills cost record_usage about a tenth of its
-- throughput at 32 clients, in 7 of 10 paired runs of test/bench/usage_index_bench.sh.  The
-- rows live a minute, until the next fold, so posting lists would save little space.)
CREATE INDEX usage_events_project ON credits.usage_events (project_id) WITH (deduplicate_items = off);

-- The folded API usage of each (project, product, hour) not deducted yet, in rate-microseconds
-- (src/usage_math.c: an amount a is a * 3.6e9).  Every minute's fold adds to these rows; on
-- half-empty pages, with only the key indexed, each addition is a heap-only update of a small
-- table.  (Folded into accumulating usage transactions instead, every API hour's row in that
-- table of millions was rewritten every minute, with new entries in its indexes, almost none
-- heap-only, and completed by one more UPDATE: test/bench/api_hours_bench.sh.)
CREATE TABLE credits.usage_rollup (
    project_id  bigint NOT NULL,
    resource_id text NOT NULL,
    usage_hour  timestamptz NOT NULL,
    units       numeric NOT NULL CHECK (units > 0),
    PRIMARY KEY (project_id, usage_hour, resource_id)
) WITH (fillfactor = 50);

-- Idempotency keys of record_usage: a key is counted once, forever.
CREATE TABLE credits.usage_keys (
    project_id      bigint NOT NULL,
    idempotency_key text NOT NULL,
    resource_id     text NOT NULL,
    amount          credits.credits NOT NULL,
    recorded_at     timestamptz NOT NULL,
    PRIMARY KEY (project_id, idempotency_key)
);

-- Auto-recharge settings.  armed is cleared by a failed auto-recharge and set again by a
-- completed deposit or by saving the settings.
CREATE TABLE credits.auto_recharge (
    project_id bigint PRIMARY KEY REFERENCES credits.accounts,
    enabled    boolean NOT NULL,
    threshold  credits.credits NOT NULL CHECK (threshold >= '0'::credits.credits),
    amount     credits.credits NOT NULL CHECK (amount > '0'::credits.credits),
    method_id  bigint REFERENCES credits.payment_methods,
    armed      boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL
);
