-- ---------------------------------------------------------------------------------------------
-- The ledger: accounts, payment methods, transactions and the events outbox.
--
-- Money rules the database itself enforces:
--   * a balance is never negative                        (CHECK on accounts.balance)
--   * one usage transaction per (project, resource, hour) (unique index)
--   * every transaction belongs to an account, and a deposit's method exists
--                                          (trigger transactions_known_references, per statement)
--   * at most one pending auto-recharge per project     (unique partial index)
--   * an idempotency key names one deposit per project   (unique partial index)
--   * status moves only pending → completed | failed and accumulating → completed, and a
--     completed or failed transaction never changes      (trigger transactions_guard)
-- The balance equals the sum of the amounts of its completed transactions (a usage hour's
-- amount is what it took from the balance), and the sum of what remains of its lots
-- (sql/install/35_lots.sql); verify() checks both.
-- ---------------------------------------------------------------------------------------------

CREATE TYPE credits.transaction_type AS ENUM ('deposit', 'usage', 'auto_recharge', 'grant', 'expiry', 'refund');
CREATE TYPE credits.transaction_status AS ENUM ('pending', 'completed', 'failed', 'accumulating');

CREATE TABLE credits.accounts (
    project_id  bigint PRIMARY KEY,
    balance     credits.credits NOT NULL DEFAULT '0'
                CONSTRAINT balance_not_negative CHECK (balance >= '0'::credits.credits),
    -- Zero-balance enforcement is in force: instances were terminated and volumes locked.
    -- Set when the balance reaches zero or accrued usage uses up the available balance;
    -- cleared when a deposit makes the available balance positive (src/zero_balance.c).
    depleted    boolean NOT NULL DEFAULT false,
    -- The end of the project's last deducted hour: its billable time before it is in completed
    -- usage transactions (sql/install/40_metering_tables.sql).
    deducted_until timestamptz NOT NULL DEFAULT '-infinity',
    -- The start of the project's oldest deducted hour (null before its first deduction).  Its
    -- completed usage transactions are all in [deducted_from, deducted_until): one project's
    -- usage is read over those hours, not over every hour in the database
    -- (credits._completed_usage).  Both are moved only by the deduction that completes them.
    deducted_from timestamptz,
    opened_at   timestamptz NOT NULL,
    CONSTRAINT deducted_hours CHECK (deducted_from < deducted_until)
)
-- Half-empty pages: a balance update (every deposit; the hourly deduction debits every
-- account with usage) finds room on its page and stays a heap-only update, with no new index
-- entry.
WITH (fillfactor = 50);

CREATE TABLE credits.payment_methods (
    method_id    bigserial PRIMARY KEY,
    project_id   bigint NOT NULL REFERENCES credits.accounts,
    provider_ref text NOT NULL CHECK (length(provider_ref) BETWEEN 1 AND credits._max_id_chars()),
    label        text CHECK (length(label) <= credits._max_id_chars()),
    is_default   boolean NOT NULL DEFAULT false,
    added_at     timestamptz NOT NULL,
    removed_at   timestamptz,
    CHECK (NOT (is_default AND removed_at IS NOT NULL))
);
CREATE UNIQUE INDEX payment_methods_one_default ON credits.payment_methods (project_id) WHERE is_default;
CREATE UNIQUE INDEX payment_methods_active_ref ON credits.payment_methods (project_id, provider_ref)
    WHERE removed_at IS NULL;

CREATE TABLE credits.transactions (
    -- Unique: one sequence numbers every transaction (the index covers deposits and
    -- auto-recharges; usage rows, a million an hour, are found by project, hour and resource).
    transaction_id  bigserial NOT NULL,
    project_id      bigint NOT NULL,
    type            credits.transaction_type NOT NULL,
    status          credits.transaction_status NOT NULL,
    -- Signed: deposits, auto-recharges and grants positive; expiries and refunds negative;
    -- usage negative or zero.  A completed usage hour's amount is minus what it took from the
    -- balance; an accumulating one's is minus its charge so far (what it takes is decided when
    -- it is deducted).  A usage hour's charge is round_half_even(accrued_units / 3.6e9) =
    -- -amount + uncollected.
    amount          credits.credits NOT NULL,
    -- Completed usage only: the part of the charge the balance could not cover.
    uncollected     credits.credits NOT NULL DEFAULT '0',
    -- Deposits: when requested.  Usage: the start of its UTC hour.
    created_at      timestamptz NOT NULL,
    description     text NOT NULL,
    -- Usage: the resource and hour, and the exact rate-microseconds accrued (src/usage_math.c).
    resource_id     text,
    usage_hour      timestamptz,
    accrued_units   numeric,
    -- Deposits and auto-recharges.
    method_id       bigint,
    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND credits._max_id_chars()),
    invoice_url     text CHECK (length(invoice_url) BETWEEN 1 AND 2048),
    failure_reason  text CHECK (length(failure_reason) <= 2000),
    completed_at    timestamptz,
    failed_at       timestamptz,
    -- Expiries and refunds: the lot (credits.credit_lots) they take from.
    lot_id          bigint,
    CONSTRAINT usage_shape CHECK (
        CASE WHEN type = 'usage'
             THEN resource_id IS NOT NULL AND usage_hour IS NOT NULL AND accrued_units IS NOT NULL
                  -- (a whole UTC hour: credits._completed_usage finds rows hour by hour)
                  AND usage_hour = credits.hour_of(usage_hour)
                  AND status IN ('accumulating', 'completed') AND amount <= '0'::credits.credits
                  AND uncollected >= '0'::credits.credits
                  AND (status = 'completed' OR uncollected = '0'::credits.credits)
                  AND method_id IS NULL AND idempotency_key IS NULL
             ELSE resource_id IS NULL AND usage_hour IS NULL AND accrued_units IS NULL
                  AND status IN ('pending', 'completed', 'failed') AND amount <> '0'::credits.credits
                  -- (the labels added in 0.2.0 as text: an upgrade cannot use them as values)
                  AND (amount > '0'::credits.credits) = (type::text NOT IN ('expiry', 'refund'))
                  AND uncollected = '0'::credits.credits
        END),
    -- (usage rows, the most written, are judged without the text of their type)
    CONSTRAINT lot_shape CHECK (CASE WHEN type = 'usage' THEN lot_id IS NULL
                                     ELSE (lot_id IS NOT NULL) = (type::text IN ('expiry', 'refund')) END),
    CONSTRAINT status_times CHECK (
        (completed_at IS NOT NULL) = (status = 'completed')
        AND (failed_at IS NOT NULL) = (status = 'failed'))
);
-- Usage rows are written a million an hour, so they are in one index only: this one, ordered
-- by hour first.  Each hourly run's new rows then go to its right edge, page after page, and
-- no older page is read or written again; ordered by project first, every run would touch a
-- page of every project's history (at 100,000 projects with a day of history, 1.7-2.7x
-- slower, and worse as history grows).  It also serves one project's completed usage, probed
-- hour by hour over its deducted hours (credits._completed_usage), and the lookups of booking
-- and deduction by their full key.  Accumulating hours have an index by project of their own
-- (they are few: the hours not yet deducted); deposits and auto-recharges have the id and
-- history indexes.
CREATE UNIQUE INDEX transactions_deposit_ids ON credits.transactions (transaction_id) WHERE type <> 'usage';
CREATE UNIQUE INDEX transactions_one_usage_per_hour
    ON credits.transactions (usage_hour, project_id, resource_id) WHERE type = 'usage';
CREATE UNIQUE INDEX transactions_idempotency_key
    ON credits.transactions (project_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX transactions_one_pending_auto_recharge
    ON credits.transactions (project_id) WHERE type = 'auto_recharge' AND status = 'pending';
CREATE INDEX transactions_accumulating
    ON credits.transactions (project_id, usage_hour) WHERE status = 'accumulating';
CREATE INDEX transactions_history ON credits.transactions (project_id, created_at DESC) WHERE type <> 'usage';

-- The outbox: what the outside world must act on, written in the transaction that caused it.
CREATE TABLE credits.events (
    event_id       bigserial PRIMARY KEY,
    project_id     bigint NOT NULL,
    kind           text NOT NULL CONSTRAINT events_kind_check CHECK (kind IN ('charge_requested',
                       'instance_terminated', 'volume_inaccessible', 'volume_available', 'balance_depleted',
                       -- spending controls and volume retention (sql/install/6x_*.sql)
                       'budget_reached', 'instance_stopped', 'balance_low', 'runway_low',
                       'balance_recovered', 'volume_deletion_warning', 'volume_deleted',
                       -- refunds (sql/install/36_refunds.sql)
                       'refund_requested',
                       -- a project's periodic work failed (sql/install/50_periodic.sql)
                       'billing_error')),
    resource_id    text,
    transaction_id bigint,
    payload        jsonb NOT NULL,
    created_at     timestamptz NOT NULL,
    claimed_until  timestamptz,          -- handed to a worker until then
    claims         integer NOT NULL DEFAULT 0,
    acked_at       timestamptz
);
CREATE INDEX events_unacked ON credits.events (event_id) WHERE acked_at IS NULL;
