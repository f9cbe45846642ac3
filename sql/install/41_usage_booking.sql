-- ---------------------------------------------------------------------------------------------
-- Booking usage into usage transactions, and reading what has accrued so far.
-- ---------------------------------------------------------------------------------------------

-- The description of a usage transaction.
CREATE FUNCTION credits._describe(kind text, resource_id text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE kind WHEN 'instance' THEN 'Instance ' WHEN 'volume' THEN 'Volume ' ELSE 'API usage ' END
           || resource_id;

-- Books what a resource billed at rate accrued over [from_ts, upto) into the usage
-- transactions of the hours it touches (creating them as accumulating).  A completed hour is
-- never reopened: callers keep billing clocks out of deducted hours (credits._billing_start),
-- and the part of a segment that still falls into one is not booked (WHERE t.status =
-- 'accumulating').  That happens only when a resource was started again by a transaction that
-- began before the hour ended and ran alongside the deduction of that hour: at most that
-- race's seconds go unbilled, instead of every later booking of the resource (and every later
-- run_hourly_deductions) failing on the completed row.
CREATE FUNCTION credits._book_usage(project_id bigint, kind text, resource_id text,
                                    rate_per_hour credits.credits, from_ts timestamptz, upto timestamptz)
    RETURNS void LANGUAGE sql AS $$
    INSERT INTO credits.transactions AS t (project_id, type, status, amount, created_at, description,
                                           resource_id, usage_hour, accrued_units)
    SELECT project_id, 'usage', 'accumulating', -credits._accrued_amount(s.units), s.usage_hour,
           credits._describe(kind, resource_id), resource_id, s.usage_hour, s.units
      FROM credits._hour_segments(rate_per_hour, from_ts, upto) AS s
    ON CONFLICT (project_id, resource_id, usage_hour) WHERE type = 'usage' DO UPDATE
       SET accrued_units = t.accrued_units + excluded.accrued_units,
           amount = -credits._accrued_amount(t.accrued_units + excluded.accrued_units)
     WHERE t.status = 'accumulating';
$$;

-- Where a resource's billing clock starts at time at: at, or the end of the resource's last
-- deducted hour when a caller whose transaction began earlier starts it after that deduction.
CREATE FUNCTION credits._billing_start(project_id bigint, resource_id text, at timestamptz)
    RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT greatest(at, max(t.usage_hour) + interval '1 hour')
      FROM credits.transactions t
     WHERE t.project_id = _billing_start.project_id AND t.resource_id = _billing_start.resource_id
       AND t.type = 'usage' AND t.status = 'completed';
$$;

-- Moves every recorded API usage event into its usage transaction.  An event whose hour was
-- already deducted (its call committed after the deduction) goes to the current hour instead:
-- nothing is lost and no completed hour changes.  Callers hold the periodic-run lock.
CREATE FUNCTION credits._fold_usage_events(at timestamptz) RETURNS bigint
    LANGUAGE sql AS $$
    WITH moved AS (
        DELETE FROM credits.usage_events RETURNING project_id, resource_id, usage_hour, amount),
    targeted AS (
        SELECT m.project_id, m.resource_id, m.amount,
               CASE WHEN EXISTS (SELECT FROM credits.transactions t
                                  WHERE t.project_id = m.project_id AND t.resource_id = m.resource_id
                                    AND t.usage_hour = m.usage_hour AND t.type = 'usage'
                                    AND t.status = 'completed')
                    THEN credits.hour_of(at) ELSE m.usage_hour END AS usage_hour
          FROM moved m),
    grouped AS (
        SELECT project_id, resource_id, usage_hour, credits._amount_units(sum(amount)) AS units, count(*) AS n
          FROM targeted GROUP BY project_id, resource_id, usage_hour),
    booked AS (
        INSERT INTO credits.transactions AS t (project_id, type, status, amount, created_at, description,
                                               resource_id, usage_hour, accrued_units)
        SELECT g.project_id, 'usage', 'accumulating', -credits._accrued_amount(g.units), g.usage_hour,
               credits._describe(coalesce(r.kind, 'api'), g.resource_id), g.resource_id, g.usage_hour, g.units
          FROM grouped g
          LEFT JOIN credits.resources r ON r.project_id = g.project_id AND r.resource_id = g.resource_id
        ON CONFLICT (project_id, resource_id, usage_hour) WHERE type = 'usage' DO UPDATE
           SET accrued_units = t.accrued_units + excluded.accrued_units,
               amount = -credits._accrued_amount(t.accrued_units + excluded.accrued_units))
    -- (a data-modifying WITH runs to completion whether or not it is read)
    SELECT coalesce(sum(n), 0)::bigint FROM grouped;
$$;

-- Usage not yet deducted, one row per (project, resource, hour), as of credits.now(): stored
-- accumulating transactions plus what accrued since (live resource time, unfolded API events).
-- transaction_id is null for an hour that has no stored row yet.  A filter on project_id is
-- pushed down to each branch, so one project's rows are read through its indexes.
CREATE VIEW credits.usage_in_progress AS
SELECT x.project_id, max(x.transaction_id) AS transaction_id, x.resource_id, x.usage_hour,
       max(x.description) AS description, -credits._accrued_amount(sum(x.units)) AS amount
  FROM (SELECT t.project_id, t.transaction_id, t.resource_id, t.usage_hour, t.description,
               t.accrued_units AS units
          FROM credits.transactions t
         WHERE t.status = 'accumulating'
        UNION ALL
        SELECT r.project_id, NULL, r.resource_id, s.usage_hour, credits._describe(r.kind, r.resource_id), s.units
          FROM credits.resources r,
               LATERAL credits._hour_segments(r.rate_per_hour, r.accrued_until, credits.now()) AS s
         WHERE r.accrued_until < credits.now()
        UNION ALL
        -- (events of an hour already deducted show in the current hour, where the fold puts them)
        SELECT e.project_id, NULL, e.resource_id,
               CASE WHEN EXISTS (SELECT FROM credits.transactions t
                                  WHERE t.project_id = e.project_id AND t.resource_id = e.resource_id
                                    AND t.usage_hour = e.usage_hour AND t.type = 'usage'
                                    AND t.status = 'completed')
                    THEN credits.hour_of(credits.now()) ELSE e.usage_hour END,
               credits._describe('api', e.resource_id), credits._amount_units(sum(e.amount))
          FROM credits.usage_events e
         GROUP BY e.project_id, e.resource_id, e.usage_hour) AS x
 GROUP BY x.project_id, x.resource_id, x.usage_hour;

-- Usage accrued and not yet deducted, in total, for one project as of credits.now().
-- (BEGIN ATOMIC: bound at install time, so the credits operators and sum() resolve whatever
-- the caller's search_path; balance_overview calls it directly.)
CREATE FUNCTION credits._accumulating(project_id bigint) RETURNS credits.credits
    LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT coalesce(-sum(u.amount), '0') FROM credits.usage_in_progress u
     WHERE u.project_id = _accumulating.project_id;
END;

-- balance − accumulating, never below zero: what the project can still spend.  An unknown
-- project raises P0002 (and a null one 22004) rather than answering null.
CREATE FUNCTION credits.available_balance(project_id bigint) RETURNS credits.credits
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
    SELECT greatest(a.balance - credits._accumulating(a.project_id), '0')
      FROM credits.accounts a
     WHERE a.project_id = (SELECT credits._require_account(available_balance.project_id));
$$;
