-- ---------------------------------------------------------------------------------------------
-- Expiry.  A lot pays for the usage hours that begin before its expires_at.  Once every such
-- hour of its project has been deducted, what is left of it leaves the balance as one expiry
-- transaction dated expires_at, written once by the periodic runs (under their lock; the lot
-- is then no longer active, so no later run finds it).
-- ---------------------------------------------------------------------------------------------

-- The end of the last hour a lot expiring at expires_at pays for: every hour before it begins
-- before expires_at.
-- (STABLE, as timestamptz - interval is: declared IMMUTABLE it would not be inlined, and each
-- call would run as a function of its own.)
CREATE FUNCTION credits._paying_until(expires_at timestamptz) RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN credits.hour_of(expires_at - interval '1 microsecond') + interval '1 hour';

-- Writes the expiry of every lot whose last hour has ended (before cur, the current hour) and
-- whose project has deducted every hour before that end: nothing booked, rolled up or billing
-- from before it remains.  Set-based: the accounts are locked in project order, then one
-- statement writes the expiries, ends the lots and debits the accounts (the zero-balance
-- trigger cuts off a project whose balance reaches zero; the balance check judges the kinds).
-- Returns the number of lots expired.  The caller holds the periodic-run lock.
CREATE FUNCTION credits._expire_lots(cur timestamptz, at timestamptz) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    lot_ids bigint[];
    project_ids bigint[];
    expired bigint;
BEGIN
    SELECT array_agg(l.transaction_id), array_agg(DISTINCT l.project_id) INTO lot_ids, project_ids
      FROM credits.credit_lots l
      JOIN credits.accounts a ON a.project_id = l.project_id
     WHERE l.active AND l.expires_at IS NOT NULL AND l.expires_at <= cur
       AND credits._paying_until(l.expires_at) <= cur
       AND NOT EXISTS (SELECT FROM credits.transactions t
                        WHERE t.project_id = l.project_id AND t.status = 'accumulating'
                          AND t.usage_hour < credits._paying_until(l.expires_at))
       AND NOT EXISTS (SELECT FROM credits.usage_rollup u
                        WHERE u.project_id = l.project_id AND u.usage_hour < credits._paying_until(l.expires_at))
       AND NOT EXISTS (SELECT FROM credits.resources r
                        WHERE r.project_id = l.project_id AND r.accrued_until IS NOT NULL
                          AND greatest(r.accrued_until, a.deducted_until) < credits._paying_until(l.expires_at));
    IF lot_ids IS NULL THEN
        RETURN 0;
    END IF;
    -- The accounts first, in project order, then the lots (the order of every path).
    PERFORM FROM credits.accounts a WHERE a.project_id = ANY (project_ids) ORDER BY a.project_id FOR NO KEY UPDATE;
    WITH due AS (
        SELECT l.transaction_id, l.project_id, l.remaining, l.expires_at FROM credits.credit_lots l
         WHERE l.transaction_id = ANY (lot_ids) AND l.active FOR UPDATE),
    written AS (
        INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, lot_id,
                                          completed_at)
        SELECT d.project_id, 'expiry', 'completed', -d.remaining, d.expires_at, 'Expired: ' || g.description,
               d.transaction_id, at
          FROM due d JOIN credits.transactions g ON g.transaction_id = d.transaction_id AND g.type <> 'usage'
         ORDER BY d.project_id, d.transaction_id),
    ended AS (
        UPDATE credits.credit_lots l SET remaining = '0', active = false, ended = 'expired'
          FROM due d WHERE l.transaction_id = d.transaction_id),
    debited AS (
        UPDATE credits.accounts a SET balance = a.balance - x.total
          FROM (SELECT d.project_id, sum(d.remaining) AS total FROM due d GROUP BY d.project_id) AS x
         WHERE a.project_id = x.project_id)
    SELECT count(*) INTO expired FROM due;
    RETURN expired;
END $$;
