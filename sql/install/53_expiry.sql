-- ---------------------------------------------------------------------------------------------
-- Expiry.  A lot pays for the usage hours that begin before its expires_at.  Once every such
-- hour of its project has been deducted, what is left of it leaves the balance as one expiry
-- transaction dated expires_at, written once by the periodic runs (under their lock; the lot
-- is then no longer active, so no later run finds it).
-- ---------------------------------------------------------------------------------------------

-- The end of the last hour a lot expiring at expires_at pays for: every hour before it begins
-- before expires_at.
CREATE FUNCTION credits._paying_until(expires_at timestamptz) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN credits.hour_of(expires_at - interval '1 microsecond') + interval '1 hour';

-- Writes the expiry of every lot whose last hour has ended (before cur, the current hour) and
-- whose project has deducted every hour before that end: nothing booked, rolled up or billing
-- from before it remains.  Returns the number of lots expired.  The caller holds the
-- periodic-run lock.
CREATE FUNCTION credits._expire_lots(cur timestamptz, at timestamptz) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    due record;
    lot credits.credit_lots;
    expired bigint := 0;
BEGIN
    FOR due IN
        SELECT l.project_id, l.transaction_id, credits._paying_until(l.expires_at) AS paying_until
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
                              AND greatest(r.accrued_until, a.deducted_until) < credits._paying_until(l.expires_at))
         ORDER BY l.project_id, l.expires_at, l.transaction_id
    LOOP
        -- The account first, then the lot (the order of every path).
        PERFORM FROM credits.accounts a WHERE a.project_id = due.project_id FOR NO KEY UPDATE;
        SELECT * INTO lot FROM credits.credit_lots l WHERE l.transaction_id = due.transaction_id AND l.active FOR UPDATE;
        CONTINUE WHEN NOT FOUND;
        INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, lot_id,
                                          completed_at)
        SELECT lot.project_id, 'expiry', 'completed', -lot.remaining, lot.expires_at,
               'Expired: ' || g.description, lot.transaction_id, at
          FROM credits.transactions g WHERE g.transaction_id = lot.transaction_id AND g.type <> 'usage';
        UPDATE credits.credit_lots l SET remaining = '0', active = false, ended = 'expired'
         WHERE l.transaction_id = lot.transaction_id;
        UPDATE credits.accounts a SET balance = a.balance - lot.remaining WHERE a.project_id = lot.project_id;
        PERFORM credits._enforce_lots(lot.project_id, at);
        expired := expired + 1;
    END LOOP;
    RETURN expired;
END $$;
