-- ---------------------------------------------------------------------------------------------
-- Booking usage into usage transactions, and reading what has accrued so far.
-- ---------------------------------------------------------------------------------------------

-- The description of a usage transaction.
CREATE FUNCTION credits._describe(kind text, resource_id text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE kind WHEN 'instance' THEN 'Instance ' WHEN 'volume' THEN 'Volume ' ELSE 'API usage ' END
           || resource_id;

-- The end of the project's last deducted hour: its billable time before it is in completed
-- usage transactions (-infinity before its first deduction).
CREATE FUNCTION credits._deducted_until(project_id bigint) RETURNS timestamptz
    LANGUAGE sql STABLE
    RETURN (SELECT a.deducted_until FROM credits.accounts a WHERE a.project_id = _deducted_until.project_id);

-- Books what a resource billed at rate accrued over [from_ts, upto) into the usage
-- transactions of the hours it touches (creating them as accumulating).  Time before the last
-- deducted hour's end is never booked again: it is in completed hours already, whatever
-- from_ts says (see credits._billing_start for the one way it can).
CREATE FUNCTION credits._book_usage(project_id bigint, kind text, resource_id text,
                                    rate_per_hour credits.credits, from_ts timestamptz, upto timestamptz)
    RETURNS void LANGUAGE sql AS $$
    INSERT INTO credits.transactions AS t (project_id, type, status, amount, created_at, description,
                                           resource_id, usage_hour, accrued_units)
    SELECT project_id, 'usage', 'accumulating', -credits._accrued_amount(s.units), s.usage_hour,
           credits._describe(kind, resource_id), resource_id, s.usage_hour, s.units
      FROM credits._hour_segments(rate_per_hour, greatest(from_ts, credits._deducted_until(project_id)), upto) AS s
    ON CONFLICT (project_id, usage_hour, resource_id) WHERE type = 'usage' DO UPDATE
       SET accrued_units = t.accrued_units + excluded.accrued_units,
           amount = -credits._accrued_amount(t.accrued_units + excluded.accrued_units);
$$;

-- Where a resource's billing clock starts when it starts billing at time at: at, or the end
-- of the last deducted hour when the caller's transaction began before a deduction that has
-- committed since (those seconds, at most the length of that race, go unbilled rather than
-- reopen a completed hour).
CREATE FUNCTION credits._billing_start(project_id bigint, at timestamptz) RETURNS timestamptz
    LANGUAGE sql STABLE
    RETURN greatest(at, credits._deducted_until(project_id));

-- The hour that API usage recorded in usage_hour counts in at time at: its own, unless that
-- hour of that product is already deducted, then the hour of at (src/unfolded_usage.c).
CREATE FUNCTION credits._api_usage_hour(project_id bigint, resource_id text, usage_hour timestamptz,
                                        at timestamptz) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'credits_api_usage_hour' LANGUAGE C STABLE STRICT PARALLEL SAFE;

-- Moves every recorded API usage event into its hour's roll-up row.  An event whose hour was
-- already deducted (its call committed after the deduction) goes to the current hour instead:
-- nothing is lost and no completed hour changes.  The events are summed per (project,
-- product, hour) before that test, so it probes the usage index once per group (tested per
-- call, a fold of 200,000 calls of 10 projects took 1.1-2.3x as long).  Callers hold the
-- periodic-run lock.
CREATE FUNCTION credits._fold_usage_events(at timestamptz) RETURNS bigint
    LANGUAGE sql AS $$
    WITH moved AS (
        DELETE FROM credits.usage_events RETURNING project_id, resource_id, usage_hour, amount),
    by_hour AS (
        SELECT m.project_id, m.resource_id, m.usage_hour, credits._units_sum(m.amount) AS units, count(*) AS n
          FROM moved m GROUP BY m.project_id, m.resource_id, m.usage_hour),
    targeted AS (
        SELECT b.project_id, b.resource_id, b.units, b.n,
               credits._api_usage_hour(b.project_id, b.resource_id, b.usage_hour, at) AS usage_hour
          FROM by_hour b),
    -- (a late group and the current hour's group of the same product become one row)
    grouped AS (
        SELECT project_id, resource_id, usage_hour, sum(units) AS units, sum(n) AS n
          FROM targeted GROUP BY project_id, resource_id, usage_hour),
    rolled_up AS (
        INSERT INTO credits.usage_rollup AS u (project_id, resource_id, usage_hour, units)
        SELECT g.project_id, g.resource_id, g.usage_hour, g.units FROM grouped g
        ON CONFLICT (project_id, usage_hour, resource_id) DO UPDATE SET units = u.units + excluded.units)
    -- (a data-modifying WITH runs to completion whether or not it is read)
    SELECT coalesce(sum(n), 0)::bigint FROM grouped;
$$;

-- One project's recorded API usage not yet folded, per product and the hour it counts in now,
-- in rate-microseconds, read only through the index of usage_events (src/unfolded_usage.c):
-- one busy project's million calls a minute never make another project's read scan them.
CREATE FUNCTION credits._unfolded_usage(project_id bigint)
    RETURNS TABLE (resource_id text, usage_hour timestamptz, units numeric)
    AS 'MODULE_PATHNAME', 'credits_unfolded_usage' LANGUAGE C STABLE STRICT PARALLEL SAFE ROWS 1;

-- Usage not yet deducted, one row per (project, resource, hour), as of credits.now(): stored
-- accumulating transactions plus what accrued since (live resource time, API usage rolled up
-- or not yet folded).  transaction_id is null for an hour that has no stored row yet.  A
-- filter on project_id is pushed down to each branch, so one project's rows are read through
-- its indexes.
CREATE VIEW credits.usage_in_progress AS
SELECT x.project_id, max(x.transaction_id) AS transaction_id, x.resource_id, x.usage_hour,
       max(x.description) AS description, -credits._accrued_amount(sum(x.units)) AS amount
  FROM (SELECT t.project_id, t.transaction_id, t.resource_id, t.usage_hour, t.description,
               t.accrued_units AS units
          FROM credits.transactions t
         WHERE t.status = 'accumulating'
        UNION ALL
        SELECT r.project_id, NULL, r.resource_id, s.usage_hour, credits._describe(r.kind, r.resource_id), s.units
          FROM credits.resources r
          JOIN credits.accounts a ON a.project_id = r.project_id,
               LATERAL credits._hour_segments(r.rate_per_hour, greatest(r.accrued_until, a.deducted_until),
                                              credits.now()) AS s
         WHERE r.accrued_until < credits.now()
        UNION ALL
        SELECT u.project_id, NULL, u.resource_id, u.usage_hour, credits._describe('api', u.resource_id), u.units
          FROM credits.usage_rollup u
        UNION ALL
        -- (each project's events read through their index, whatever the statistics say, in
        -- the hour they count in now: where the fold will put them)
        SELECT a.project_id, NULL, e.resource_id, e.usage_hour, credits._describe('api', e.resource_id), e.units
          FROM credits.accounts a, LATERAL credits._unfolded_usage(a.project_id) AS e) AS x
 GROUP BY x.project_id, x.resource_id, x.usage_hour;

-- Usage accrued and not yet deducted, in total, for one project as of credits.now().
-- (BEGIN ATOMIC: bound at install time, so the credits operators and sum() resolve whatever
-- the caller's search_path; balance_overview calls it directly.)
CREATE FUNCTION credits._accumulating(project_id bigint) RETURNS credits.credits
    LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT coalesce(-credits._usage_total(u.amount), '0') FROM credits.usage_in_progress u
     WHERE u.project_id = _accumulating.project_id;
END;

-- What a project with this balance can still spend once its accrued usage is deducted: the
-- one definition of the available balance, which every check and view calls.
CREATE FUNCTION credits._available(balance credits.credits, accrued credits.credits) RETURNS credits.credits
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN greatest(balance - coalesce(accrued, '0'::credits.credits), '0'::credits.credits);
