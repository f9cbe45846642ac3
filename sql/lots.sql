\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/metering_helpers.sql
\set ECHO all
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
-- Credit lots (README "Credit lots and refunds"): grants, the draw-down of each usage hour,
-- expiry, zero balance kind by kind, refunds.  Projects 9000-9099, June 2026.

-- A project's lots, oldest first (ids come from a shared sequence: not shown).
CREATE FUNCTION pg_temp.lots(p bigint)
    RETURNS TABLE (kind text, amount credits, remaining credits, expires_at timestamptz, priority integer,
                   applies_to text[], state text)
    LANGUAGE sql AS $$
    SELECT l.kind, l.amount, l.remaining, l.expires_at, l.priority, l.applies_to, l.state
      FROM credits.lots l WHERE l.project_id = p ORDER BY l.transaction_id;
$$;
-- fails(stmt) with the ids of the shared sequences masked.
CREATE FUNCTION pg_temp.refused(stmt text) RETURNS text LANGUAGE sql AS $$
    SELECT regexp_replace(pg_temp.fails(stmt), '\m(deposit|transaction|Transaction|refund) [0-9]+\M', '\1 #', 'g');
$$;
-- A project's non-usage history, oldest first.
CREATE FUNCTION pg_temp.history(p bigint)
    RETURNS TABLE (date timestamptz, type credits.transaction_type, description text, amount credits,
                   status credits.transaction_status)
    LANGUAGE sql AS $$
    SELECT h.date, h.type, h.description, h.amount, h.status
      FROM credits.transaction_history h WHERE h.project_id = p AND h.type <> 'usage'
     ORDER BY h.date, h.transaction_id;
$$;

--
-- 1. Lots: a completed deposit is a paid lot; a grant a promotional one, completed at once.
--    Each usage hour is paid by the lots that may pay for it, in order: lowest priority, soonest
--    expiry (none last), promotional before paid, oldest.
--
SET credits.clock = '2026-06-01 09:00+00';
SELECT pg_temp.funded(9001, '10.00');
SELECT credits.grant_credits(9001, '3.00', description => 'Sign-up credit') IS NOT NULL AS granted;
SELECT credits.grant_credits(9001, '2.00', expires_at => '2026-06-03 00:00+00', description => 'Expiring') IS NOT NULL AS granted;
SELECT credits.grant_credits(9001, '1.00', priority => 10, description => 'First') IS NOT NULL AS granted;
SELECT credits.grant_credits(9001, '4.00', priority => 90, description => 'Last') IS NOT NULL AS granted;
SELECT * FROM pg_temp.lots(9001);
SELECT current_balance, available_balance FROM credits.balance_overview WHERE project_id = 9001;
SELECT * FROM pg_temp.history(9001);
-- 09:00-10:00 at 2.50/h: "First" (priority 10) gives 1.00, then "Expiring" (priority 50,
-- expires soonest) 1.50.
SELECT credits.start_instance(9001, 'gpu-1', '2.50');
SET credits.clock = '2026-06-01 10:00+00';
SELECT pg_temp.deduct(9000, 9099);
SELECT * FROM pg_temp.lots(9001);
-- 10:00-11:00: "Expiring" gives its last 0.50, then "Sign-up credit" (promotional before the
-- paid lot of the same priority and no expiry) 2.00.
SET credits.clock = '2026-06-01 11:00+00';
SELECT pg_temp.deduct(9000, 9099);
SELECT * FROM pg_temp.lots(9001);
-- 11:00-13:00: "Sign-up credit" gives 1.00 and the deposit 1.50, then the deposit 2.50.
SET credits.clock = '2026-06-01 13:00+00';
SELECT pg_temp.deduct(9000, 9099);
SELECT * FROM pg_temp.lots(9001);
SELECT pg_temp.totals(9001);
SELECT * FROM credits.verify(9001);

-- Two lots of equal priority and expiry: the older pays first.
SET credits.clock = '2026-06-01 09:00+00';
SELECT pg_temp.funded(9002, '5.00');
SELECT credits.grant_credits(9002, '1.00', '2026-07-01 00:00+00', description => 'Older') IS NOT NULL AS granted,
       credits.grant_credits(9002, '1.00', '2026-07-01 00:00+00', description => 'Newer') IS NOT NULL AS granted;
SELECT credits.start_instance(9002, 'gpu-1', '1.50');
SET credits.clock = '2026-06-01 10:00+00';
SELECT pg_temp.deduct(9000, 9099);
SELECT * FROM pg_temp.lots(9002);
SELECT * FROM credits.verify(9002);

-- Two lots alike but for their age: the one created first pays first, even when its id is the
-- later one (a transaction's created_at is when it began, its id is taken when the row is
-- written, so concurrent grants can come out in either order).
SET credits.clock = '2026-06-01 09:00+00';
SELECT pg_temp.funded(9003, '5.00');
SELECT credits.grant_credits(9003, '1.00', '2026-07-01 00:00+00', description => 'Created second') IS NOT NULL AS granted;
SET credits.clock = '2026-06-01 08:30+00';
SELECT credits.grant_credits(9003, '1.00', '2026-07-01 00:00+00', description => 'Created first') IS NOT NULL AS granted;
SET credits.clock = '2026-06-01 09:00+00';
SELECT credits.start_instance(9003, 'gpu-1', '1.50');
SET credits.clock = '2026-06-01 10:00+00';
SELECT pg_temp.deduct(9000, 9099);
-- The hour's 1.50: 1.00 from the grant created at 08:30, 0.50 from the one created at 09:00.
SELECT t.description, t.created_at, l.transaction_id < max(l.transaction_id) OVER () AS lower_id,
       l.remaining, l.state
  FROM credits.lots l JOIN credits.transactions t USING (transaction_id)
 WHERE l.project_id = 9003 AND l.kind = 'promotional' ORDER BY t.created_at;
SELECT current_balance FROM credits.balance_overview WHERE project_id = 9003;
SELECT * FROM credits.verify(9003);
SELECT credits.stop_instance(9003, 'gpu-1');

-- A lot that expires at 'infinity' has an expiry, so it pays before one that has none, also
-- when it is the newer one.
SET credits.clock = '2026-06-01 09:00+00';
SELECT pg_temp.funded(9004, '5.00');
SELECT credits.grant_credits(9004, '1.00', description => 'Never expires') IS NOT NULL AS granted;
SELECT credits.grant_credits(9004, '1.00', 'infinity', description => 'Expires at infinity') IS NOT NULL AS granted;
SELECT credits.start_instance(9004, 'gpu-1', '1.50');
SET credits.clock = '2026-06-01 10:00+00';
SELECT pg_temp.deduct(9000, 9099);
SELECT t.description, l.expires_at, l.remaining, l.state
  FROM credits.lots l JOIN credits.transactions t USING (transaction_id)
 WHERE l.project_id = 9004 AND l.kind = 'promotional' ORDER BY l.transaction_id;
SELECT * FROM credits.verify(9004);
SELECT credits.stop_instance(9004, 'gpu-1');

--
-- 2. Expiry: a lot pays for the hours that begin before its expires_at, even when they are
--    deducted later; then one expiry transaction, dated expires_at, takes what is left.
--    From expires_at on, available_balance no longer counts it.
--
SET credits.clock = '2026-06-02 14:00+00';
SELECT pg_temp.funded(9010, '5.00');
SELECT credits.grant_credits(9010, '10.00', expires_at => '2026-06-02 14:30+00', priority => 0,
                             description => 'Half-hour promotion') IS NOT NULL AS granted;
SELECT credits.start_instance(9010, 'gpu-1', '2.00');
SET credits.clock = '2026-06-02 14:20+00';
SELECT current_balance, accumulating, available_balance FROM credits.balance_overview WHERE project_id = 9010;
-- 14:40: the promotion has expired for new usage (the accrued 1.33 still comes from it).
SET credits.clock = '2026-06-02 14:40+00';
SELECT current_balance, accumulating, available_balance FROM credits.balance_overview WHERE project_id = 9010;
SELECT credits.available_balance(9010);
-- A balance check before the hour is deducted writes no expiry (14:00's hour may still draw on it).
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT * FROM pg_temp.lots(9010);
-- 15:05: the 14:00 hour (2.00) is deducted from the promotion, all of it; then the promotion
-- expires (8.00, dated 14:30); the 15:00 hour will be paid by the deposit.
SET credits.clock = '2026-06-02 15:05+00';
SELECT pg_temp.deduct(9000, 9099);
SELECT * FROM pg_temp.lots(9010);
SELECT * FROM pg_temp.history(9010);
SELECT * FROM pg_temp.usage(9010);
SELECT current_balance, accumulating, available_balance FROM credits.balance_overview WHERE project_id = 9010;
-- Exactly once: later runs write no second expiry.
SELECT credits.run_balance_checks() >= 0 AS checked, pg_temp.deduct(9000, 9099);
SELECT count(*) AS expiries FROM credits.transactions WHERE project_id = 9010 AND type = 'expiry';
SELECT * FROM credits.verify(9010);

-- A project without usage: its lot expires at the first periodic run after expires_at.
SET credits.clock = '2026-06-02 14:00+00';
SELECT credits.open_account(9011);
SELECT credits.grant_credits(9011, '5.00', expires_at => '2026-06-02 16:00+00') IS NOT NULL AS granted;
SET credits.clock = '2026-06-02 16:01+00';
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT * FROM pg_temp.lots(9011);
SELECT current_balance FROM credits.balance_overview WHERE project_id = 9011;
SELECT * FROM credits.verify(9011);

--
-- 3. Zero balance kind by kind: an API-only grant next to a paid lot.  When the paid lot is used
--    up, the instance is cut off (nothing else may pay for it) while API usage is still paid.
--
SET credits.clock = '2026-06-03 09:00+00';
SELECT pg_temp.funded(9020, '5.00');
SELECT credits.grant_credits(9020, '20.00', applies_to => ARRAY['api'], description => 'API credit') IS NOT NULL AS granted;
SELECT credits.start_instance(9020, 'gpu-1', '4.00');
SELECT credits.record_usage(9020, 'api:chat', '1.00');
SET credits.clock = '2026-06-03 10:00+00';
SELECT pg_temp.deduct(9000, 9099);
SELECT * FROM pg_temp.lots(9020);
-- 10:30: the instance's 2.00 accrued leaves the paid lot nothing for instances past 10:15
-- (1.00 left at 10:00): the balance check cuts it off; the API credit still pays API usage.
SET credits.clock = '2026-06-03 10:30+00';
SELECT credits.run_balance_checks() > 0 AS acted;
SELECT resource_id, state FROM credits.resource_overview WHERE project_id = 9020;
SELECT kind, resource_id FROM credits.events WHERE project_id = 9020 AND kind <> 'charge_requested' ORDER BY event_id;
SELECT pg_temp.fails($$SELECT credits.start_instance(9020, 'gpu-2', '1.00')$$) AS start_refused;
SELECT credits.record_usage(9020, 'api:chat', '2.00');
-- The history's accumulating rows show what each hour would take from the lots that may pay
-- for it, as the deduction at 11:00 then takes it: the instance's 2.00 finds 1.00 left in the
-- paid lot (1.00 uncollected), the API hour's 2.00 comes from the API credit.
SELECT description, amount, uncollected FROM credits.transaction_history
 WHERE project_id = 9020 AND status = 'accumulating' ORDER BY description;
SET credits.clock = '2026-06-03 11:00+00';
SELECT pg_temp.deduct(9000, 9099);
SELECT * FROM pg_temp.usage(9020);
SELECT * FROM pg_temp.lots(9020);
SELECT current_balance, available_balance FROM credits.balance_overview WHERE project_id = 9020;
SELECT * FROM credits.verify(9020);
-- Cut off with only API credit left, it stays cut off when more API credit comes (nothing may
-- pay for its instances or volumes: no volume comes back only to be locked again); a deposit
-- lifts it.
SET credits.clock = '2026-06-03 11:30+00';
SELECT credits.grant_credits(9020, '5.00', applies_to => ARRAY['api']) IS NOT NULL AS granted;
SELECT a.depleted FROM credits.accounts a WHERE a.project_id = 9020;
SELECT credits.complete_deposit(9020, credits.add_credits(9020, '10.00')) AS balance;
SELECT a.depleted FROM credits.accounts a WHERE a.project_id = 9020;
SELECT kind, resource_id FROM credits.events WHERE project_id = 9020 AND kind <> 'charge_requested' ORDER BY event_id;
SELECT * FROM credits.verify(9020);

-- A volume-only grant: volumes stay while instances are cut off; nothing left for either
-- kind depletes the project as at zero balance.
SET credits.clock = '2026-06-03 09:00+00';
SELECT credits.open_account(9021);
SELECT credits.grant_credits(9021, '0.50', applies_to => ARRAY['volume']) IS NOT NULL AS granted;
SELECT pg_temp.fails($$SELECT credits.start_instance(9021, 'gpu-1', '1.00')$$) AS start_refused;
SELECT credits.attach_volume(9021, 'vol-1', '0.10');
SET credits.clock = '2026-06-03 14:00+00';
SELECT pg_temp.deduct(9000, 9099);
SELECT credits.run_balance_checks() > 0 AS acted;
SELECT resource_id, state FROM credits.resource_overview WHERE project_id = 9021;
SELECT a.depleted, a.balance FROM credits.accounts a WHERE a.project_id = 9021;
SELECT * FROM credits.verify(9021);

-- Lifted by credit that may pay for instances only, a cut-off project's volumes stay locked (no
-- volume comes back only to be locked again); credit that may pay for volumes brings them back.
SET credits.clock = '2026-06-03 09:00+00';
SELECT pg_temp.funded(9022, '5.00');
SELECT credits.attach_volume(9022, 'vol-1', '5.00');
SET credits.clock = '2026-06-03 10:00+00';
SELECT pg_temp.deduct(9000, 9099);
SELECT a.depleted, a.balance FROM credits.accounts a WHERE a.project_id = 9022;
SELECT credits.grant_credits(9022, '3.00', applies_to => ARRAY['instance']) IS NOT NULL AS granted;
SELECT a.depleted FROM credits.accounts a WHERE a.project_id = 9022;
SELECT resource_id, state FROM credits.resource_overview WHERE project_id = 9022;
SELECT credits.grant_credits(9022, '2.00', applies_to => ARRAY['volume']) IS NOT NULL AS granted;
SELECT resource_id, state FROM credits.resource_overview WHERE project_id = 9022;
SELECT kind, resource_id FROM credits.events WHERE project_id = 9022 AND kind <> 'charge_requested' ORDER BY event_id;
SELECT credits.delete_volume(9022, 'vol-1');
SELECT * FROM credits.verify(9022);

-- Nothing left that may pay for instances or volumes while nothing accrues: the balance check
-- depletes the project as at zero balance (balance_depleted), though API-only credit remains.
SET credits.clock = '2026-06-03 09:00+00';
SELECT pg_temp.funded(9023, '5.00');
SELECT credits.grant_credits(9023, '3.00', applies_to => ARRAY['api']) IS NOT NULL AS granted;
SELECT credits.start_instance(9023, 'gpu-1', '5.00');
SET credits.clock = '2026-06-03 10:00+00';
SELECT credits.stop_instance(9023, 'gpu-1');
SELECT pg_temp.deduct(9000, 9099);
SELECT a.depleted, a.balance FROM credits.accounts a WHERE a.project_id = 9023;
SELECT credits.run_balance_checks() > 0 AS acted;
SELECT a.depleted FROM credits.accounts a WHERE a.project_id = 9023;
SELECT kind, resource_id FROM credits.events WHERE project_id = 9023 AND kind <> 'charge_requested' ORDER BY event_id;
SELECT * FROM credits.verify(9023);

--
-- 4. Refunds: only a paid lot, only its unused part; pending holds it; the worker completes or
--    fails it.
--
SET credits.clock = '2026-06-04 09:00+00';
SELECT pg_temp.funded(9030, '50.00');
SELECT credits.grant_credits(9030, '5.00', description => 'Promo') AS grant_id \gset
SELECT transaction_id AS deposit_id FROM credits.transactions WHERE project_id = 9030 AND type = 'deposit' \gset
SELECT credits.start_instance(9030, 'gpu-1', '10.00');
SET credits.clock = '2026-06-04 10:00+00';
SELECT pg_temp.deduct(9000, 9099);
-- 10:30: 5.00 accrued this hour.  Of the deposit, 45.00 remains (the promotion paid 5.00 first);
-- the accrued 5.00 will come from it, so 40.00 may be refunded.
SET credits.clock = '2026-06-04 10:30+00';
SELECT * FROM pg_temp.lots(9030);
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused(format('SELECT credits.refund_deposit(9030, %s, ''40.01'')', :deposit_id)) AS too_much;
SELECT pg_temp.refused(format('SELECT credits.refund_deposit(9030, %s)', :grant_id)) AS a_grant;
SELECT pg_temp.refused(format('SELECT credits.refund_deposit(9020, %s)', :deposit_id)) AS another_project;
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT credits.refund_deposit(9030, :deposit_id, '30.00', 'customer request', 'refund-1') AS refund_a \gset
SELECT credits.refund_deposit(9030, :deposit_id, '30.00', 'customer request', 'refund-1') = :refund_a AS same_refund;
SELECT pg_temp.refused(format('SELECT credits.refund_deposit(9030, %s, ''31.00'', NULL, ''refund-1'')', :deposit_id)) AS key_reused;
-- held: 30.00 is not available, and no usage draws on it
SELECT current_balance, accumulating, available_balance FROM credits.balance_overview WHERE project_id = 9030;
SELECT remaining, (SELECT held FROM credits.credit_lots WHERE transaction_id = :deposit_id) AS held
  FROM credits.lots WHERE transaction_id = :deposit_id;
SELECT kind, payload - 'transaction_id' - 'deposit_transaction_id' - 'method_id' AS payload,
       (payload->>'deposit_transaction_id')::bigint = :deposit_id AS of_the_deposit
  FROM credits.events WHERE project_id = 9030 AND kind = 'refund_requested';
-- 10 more may be refunded now; a second refund of all that may be (amount null) takes it.
SELECT credits.refund_deposit(9030, :deposit_id, reason => 'rest') AS refund_b \gset
SELECT amount, status FROM credits.transactions WHERE transaction_id = :refund_b;
SELECT pg_temp.refused(format('SELECT credits.refund_deposit(9030, %s)', :deposit_id)) AS nothing_left;
-- nothing is available now: the zero-balance rule cuts the instance off
SELECT resource_id, state FROM credits.resource_overview WHERE project_id = 9030;
SELECT credits.complete_refund(9030, :refund_a) AS new_balance;
SELECT credits.fail_refund(9030, :refund_b, 'provider_declined');
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused(format('SELECT credits.complete_refund(9030, %s)', :refund_a)) AS complete_twice;
SELECT pg_temp.refused(format('SELECT credits.fail_refund(9030, %s)', :refund_b)) AS fail_twice;
SELECT pg_temp.refused(format('SELECT credits.complete_refund(9020, %s)', :refund_b)) AS other_project;
SELECT pg_temp.refused(format('SELECT credits.complete_deposit(9030, %s)', :refund_b)) AS not_a_deposit;
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT * FROM pg_temp.lots(9030);
SELECT * FROM pg_temp.history(9030);
SELECT current_balance, accumulating, available_balance FROM credits.balance_overview WHERE project_id = 9030;
SELECT * FROM credits.verify(9030);
-- a pending and a failed deposit are no lots
SELECT credits.add_credits(9030, '20.00') AS pending_dep, credits.add_credits(9030, '25.00') AS failed_dep \gset
SELECT credits.fail_deposit(9030, :failed_dep);
SELECT pg_temp.refused(format('SELECT credits.refund_deposit(9030, %s)', :pending_dep)) AS pending;
SELECT pg_temp.refused(format('SELECT credits.refund_deposit(9030, %s)', :failed_dep)) AS failed;

--
-- 5. Bad grants: nothing written.
--
SELECT pg_temp.ledger_state() AS before \gset
SELECT label, pg_temp.fails(stmt) AS result FROM (VALUES
    ('zero amount', $$SELECT credits.grant_credits(9001, '0')$$),
    ('negative amount', $$SELECT credits.grant_credits(9001, '-1.00')$$),
    ('over the limit', $$SELECT credits.grant_credits(9001, '1000000000.01')$$),
    ('expires in the past', $$SELECT credits.grant_credits(9001, '1.00', '2026-06-01 00:00+00')$$),
    ('priority -1', $$SELECT credits.grant_credits(9001, '1.00', priority => -1)$$),
    ('priority 101', $$SELECT credits.grant_credits(9001, '1.00', priority => 101)$$),
    ('unknown kind', $$SELECT credits.grant_credits(9001, '1.00', applies_to => ARRAY['gpu'])$$),
    ('no kinds', $$SELECT credits.grant_credits(9001, '1.00', applies_to => '{}')$$),
    ('unknown project', $$SELECT credits.grant_credits(9099, '1.00')$$),
    ('by credits_app', $$SET LOCAL ROLE credits_app; SELECT credits.grant_credits(9001, '1.00')$$)
) AS c(label, stmt);
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
-- a retried grant with its key writes nothing; with other arguments it is refused
SELECT credits.grant_credits(9001, '1.00', applies_to => ARRAY['volume', 'api'], idempotency_key => 'promo-1') AS promo \gset
SELECT credits.grant_credits(9001, '1.00', applies_to => ARRAY['api', 'volume'], idempotency_key => 'promo-1') = :promo AS same_grant;
SELECT pg_temp.refused($$SELECT credits.grant_credits(9001, '2.00', idempotency_key => 'promo-1')$$) AS key_reused;

--
-- 6. Statements: opening + deposits + grants + usage + expired + refunded = closing, exactly,
--    and consecutive periods chain.
--
SELECT * FROM credits.statement(9010, '2026-06-02 00:00+00', '2026-06-03 00:00+00');
SELECT * FROM credits.statement(9030, '2026-06-04 00:00+00', '2026-06-05 00:00+00');
SELECT * FROM credits.usage_by_resource(9020, '2026-06-03 00:00+00', '2026-06-04 00:00+00');
SELECT * FROM credits.usage_by_resource(9001, '2026-06-01 00:00+00', '2026-06-02 00:00+00', '2 hours');
-- random periods over every project of this file
SELECT count(*) AS periods,
       count(*) FILTER (WHERE s.opening + s.moved <> s.closing) AS identity_broken,
       count(*) FILTER (WHERE s.closing <> s.next_opening) AS chain_broken
  FROM (SELECT p.project_id, p.a, p.b,
               (SELECT amount FROM credits.statement(p.project_id, p.a, p.b) WHERE line = 'opening_balance') AS opening,
               (SELECT sum(amount) FROM credits.statement(p.project_id, p.a, p.b)
                 WHERE line IN ('deposits', 'grants', 'usage', 'expired', 'refunded')) AS moved,
               (SELECT amount FROM credits.statement(p.project_id, p.a, p.b) WHERE line = 'closing_balance') AS closing,
               (SELECT amount FROM credits.statement(p.project_id, p.b, p.b + interval '7 days')
                 WHERE line = 'opening_balance') AS next_opening
          FROM (SELECT a.project_id, x.a, x.a + x.len AS b
                  FROM credits.accounts a,
                       LATERAL (SELECT '2026-05-31 00:00+00'::timestamptz + (random() * 120) * interval '1 hour' AS a,
                                       (1 + random() * 96) * interval '1 hour' AS len
                                  FROM generate_series(1, 20)) AS x
                 WHERE a.project_id BETWEEN 9000 AND 9099) AS p) AS s;
-- the last closing balance is the balance
SELECT a.project_id, a.balance,
       (SELECT amount FROM credits.statement(a.project_id, '2026-01-01 00:00+00', '2027-01-01 00:00+00')
         WHERE line = 'closing_balance') AS closing
  FROM credits.accounts a WHERE a.project_id BETWEEN 9000 AND 9099 ORDER BY 1;
SELECT pg_temp.fails($$SELECT * FROM credits.statement(9001, '2026-06-02', '2026-06-01')$$) AS empty_period;
SELECT pg_temp.fails($$SELECT * FROM credits.usage_by_resource(9001, '2026-06-01', '2026-06-02', '1 month')$$) AS month_bucket;

SELECT * FROM credits.verify() WHERE project_id BETWEEN 9000 AND 9099;
