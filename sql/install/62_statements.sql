-- ---------------------------------------------------------------------------------------------
-- Statements: a project's completed transactions dated in [from_time, to_time) (their history
-- date: a usage hour's start, a deposit's request, a grant, an expiry's expires_at, a refund's
-- request), summed so that opening + deposits + grants + usage + expired + refunded = closing,
-- and the closing of one period is the opening of the next.  Usage is read from the project's
-- daily summaries where they cover whole days (61_usage_days.sql), and every other hour from
-- the usage index over the project's own deducted hours since from_time; the rest through the
-- history index.  So a statement costs what the project's own history since from_time costs.
-- (enable_seqscan = off: given the hours as an array of unknown length, a planner with stale
-- statistics could test every row of every project against thousands of hours; an index
-- serves each of these reads.)
-- ---------------------------------------------------------------------------------------------

-- Raises 22023 unless [from_time, to_time) is a non-empty period (22004 when a bound is null).
CREATE FUNCTION credits._require_period(from_time timestamptz, to_time timestamptz) RETURNS void
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM credits._require('from_time', from_time IS NULL);
    PERFORM credits._require('to_time', to_time IS NULL);
    IF NOT from_time < to_time OR NOT isfinite(from_time) OR NOT isfinite(to_time) THEN
        RAISE EXCEPTION 'the period [%, %) is empty or unbounded', from_time, to_time
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- The project's completed usage transactions dated from from_time on (its hours in
-- [from_time, deducted_until)), less the hours in skipped (a statement's summed days), found
-- in the usage index by hour and project: one index scan given every hour as an array
-- (credits.transactions' usage index is ordered by hour first).  (The hours are computed once,
-- from the account alone: an array that depended on a joined row was recomputed for every
-- usage row.  BEGIN ATOMIC, inlined where it is read.)
CREATE FUNCTION credits._usage_since(project_id bigint, from_time timestamptz,
                                     skipped tstzmultirange DEFAULT '{}')
    RETURNS SETOF credits.transactions
    LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT t.*
      FROM credits.transactions t
     WHERE t.project_id = _usage_since.project_id
       AND t.type = 'usage' AND t.status = 'completed'
       AND t.usage_hour = ANY (ARRAY(
               SELECT h
                 FROM credits.accounts a,
                      generate_series(greatest(a.deducted_from,
                                               credits.hour_of(from_time - interval '1 microsecond') + interval '1 hour'),
                                      a.deducted_until - interval '1 hour', interval '1 hour') AS h
                WHERE a.project_id = _usage_since.project_id AND NOT h <@ skipped));
END;

-- A project's statement for [from_time, to_time): the lines opening_balance, deposits
-- (deposits and auto-recharges), grants, one usage line per resource (what the balance paid,
-- negative), expired, refunded, closing_balance, and uncollected (what usage the balance could
-- not pay; information only).  One pass over what is dated from from_time on sums it by line,
-- resource and whether it is in the period; the lines are read from those few sums.  Usage is
-- read from the daily summaries for the summed days after from_time that lie wholly inside the
-- period or wholly after it (summed), and from the usage rows for every other hour.
CREATE FUNCTION credits.statement(project_id bigint, from_time timestamptz, to_time timestamptz)
    RETURNS TABLE (line text, resource_id text, amount credits.credits)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
    SET enable_seqscan = off AS $$
DECLARE
    -- (the first midnight at or after a time)
    day_after_from timestamptz := date_trunc('day', from_time - interval '1 microsecond', 'UTC') + interval '1 day';
    day_after_to timestamptz := date_trunc('day', to_time - interval '1 microsecond', 'UTC') + interval '1 day';
    summed tstzmultirange;
BEGIN
    PERFORM credits._require_account(project_id);
    PERFORM credits._require_period(from_time, to_time);
    -- the project's summed days from from_time on, less the day to_time falls inside
    SELECT tstzmultirange(tstzrange(s.summarized_from, s.summarized_until))
           * tstzmultirange(tstzrange(day_after_from, greatest(day_after_from, date_trunc('day', to_time, 'UTC'))),
                            tstzrange(day_after_to, NULL))
      INTO summed
      FROM credits.usage_days_summarized s WHERE s.project_id = statement.project_id;
    summed := coalesce(summed, '{}');
    -- (planned for each call's arguments: a plan kept for any arguments guesses few rows and
    -- sorts them to sum them by resource; planned for the call, they are summed in a hash)
    RETURN QUERY EXECUTE $q$
    WITH since AS MATERIALIZED (
        -- every completed transaction dated from from_time on, summed by the line it counts in
        -- (usage by resource) and by whether it is in the period
        SELECT x.line, x.resource_id, x.in_period, sum(x.amount) AS amount, sum(x.uncollected) AS uncollected
          FROM (SELECT CASE t.type::text WHEN 'deposit' THEN 'deposits' WHEN 'auto_recharge' THEN 'deposits'
                                         WHEN 'grant' THEN 'grants' WHEN 'expiry' THEN 'expired' ELSE 'refunded' END AS line,
                       NULL::text AS resource_id, t.amount, '0'::credits.credits AS uncollected,
                       t.created_at < $3 AS in_period
                  FROM credits.transactions t
                 WHERE t.project_id = $1 AND t.type <> 'usage' AND t.status = 'completed'
                   AND t.created_at >= $2
                UNION ALL
                SELECT 'usage', u.resource_id, u.amount, u.uncollected, u.created_at < $3
                  FROM credits._usage_since($1, $2, $4) AS u
                UNION ALL
                SELECT 'usage', d.resource_id, d.amount, d.uncollected, d.day < $3
                  FROM credits.usage_days d
                 WHERE d.project_id = $1 AND d.day <@ $4) AS x
         GROUP BY x.line, x.resource_id, x.in_period),
    ends AS (
        -- the balance less everything dated from from_time on is the opening balance
        SELECT a.balance - coalesce((SELECT sum(x.amount) FROM since x), '0'::credits.credits) AS opening,
               a.balance - coalesce((SELECT sum(x.amount) FROM since x WHERE NOT x.in_period),
                                    '0'::credits.credits) AS closing
          FROM credits.accounts a WHERE a.project_id = $1),
    lines AS (
        SELECT 1 AS ord, 'opening_balance' AS line, NULL::text AS resource_id, e.opening AS amount FROM ends e
        UNION ALL
        SELECT l.ord, l.line, NULL, coalesce((SELECT sum(x.amount) FROM since x WHERE x.in_period AND x.line = l.line),
                                             '0'::credits.credits)
          FROM (VALUES (2, 'deposits'), (3, 'grants'), (5, 'expired'), (6, 'refunded')) AS l(ord, line)
        UNION ALL
        SELECT 4, 'usage', x.resource_id, x.amount FROM since x WHERE x.in_period AND x.line = 'usage'
        UNION ALL
        SELECT 7, 'closing_balance', NULL, e.closing FROM ends e
        UNION ALL
        SELECT 8, 'uncollected', NULL, coalesce((SELECT sum(x.uncollected) FROM since x WHERE x.in_period),
                                                '0'::credits.credits))
    SELECT l.line, l.resource_id, l.amount FROM lines l ORDER BY l.ord, l.resource_id$q$
    USING project_id, from_time, to_time, summed;
END $$;

-- A project's usage in [from_time, to_time) by resource and bucket (buckets of the given
-- length from from_time on): the kind, the hours charged, what they charged and what the
-- balance paid of it (both positive).  Completed usage hours only, dated by their start.
CREATE FUNCTION credits.usage_by_resource(project_id bigint, from_time timestamptz, to_time timestamptz,
                                          bucket interval DEFAULT '1 day')
    RETURNS TABLE (bucket_start timestamptz, resource_id text, kind text, hours integer,
                   charged credits.credits, collected credits.credits)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
    SET enable_seqscan = off AS $$
BEGIN
    PERFORM credits._require_account(project_id);
    PERFORM credits._require_period(from_time, to_time);
    PERFORM credits._require('bucket', bucket IS NULL);
    IF bucket <= interval '0' OR date_part('month', bucket) <> 0 OR date_part('year', bucket) <> 0 THEN
        RAISE EXCEPTION 'bucket must be a positive interval without months, got %', bucket
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT date_bin(bucket, u.usage_hour, from_time), u.resource_id, coalesce(r.kind, 'api'), count(*)::integer,
           sum(u.uncollected - u.amount), -sum(u.amount)
      FROM credits._usage_since(usage_by_resource.project_id, from_time) AS u
      LEFT JOIN credits.resources r ON r.project_id = u.project_id AND r.resource_id = u.resource_id
     WHERE u.usage_hour < to_time
     GROUP BY 1, 2, 3
     ORDER BY 1, 2;
END $$;

COMMENT ON FUNCTION credits.statement(bigint, timestamptz, timestamptz) IS 'a project''s statement of the completed transactions dated in [from_time, to_time): opening_balance, deposits, grants, usage per resource, expired, refunded, closing_balance, uncollected';
COMMENT ON FUNCTION credits.usage_by_resource(bigint, timestamptz, timestamptz, interval) IS 'a project''s completed usage in [from_time, to_time) by bucket and resource: kind, hours, charged and collected';
