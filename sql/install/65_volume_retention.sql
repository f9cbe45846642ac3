-- ---------------------------------------------------------------------------------------------
-- Volumes kept at zero balance.  With the setting credits.volume_retention empty (the
-- default) an inaccessible volume is kept until a deposit makes the balance positive again.
-- When it holds an interval, a volume inaccessible that long is deleted by run_balance_checks
-- (state deleted, volume_deleted queued): its volume_inaccessible event carries deletes_at, a
-- volume_deletion_warning is queued 24 hours before (at once when less is left), and a
-- volume is never deleted by the run that warned about it.  A deposit in time makes it
-- available again, as always.
-- ---------------------------------------------------------------------------------------------

-- The superuser-only setting credits.volume_retention as an interval (null when empty).
CREATE FUNCTION credits.volume_retention() RETURNS interval
    AS 'MODULE_PATHNAME', 'credits_volume_retention_interval' LANGUAGE C STABLE PARALLEL SAFE;

-- What the cut-off adds to the event of a resource it makes inaccessible at time at: the
-- volume's deletes_at when volumes are deleted (credits._cut_off).
CREATE FUNCTION credits._retention_payload(kind text, at timestamptz) RETURNS jsonb
    LANGUAGE sql STABLE
    RETURN CASE WHEN kind = 'volume' AND credits.volume_retention() IS NOT NULL
                THEN jsonb_build_object('deletes_at', at + credits.volume_retention())
                ELSE '{}'::jsonb END;

-- The inaccessible volumes, by the time they became so: what the retention run reads.
CREATE INDEX resources_inaccessible ON credits.resources (state_since) WHERE state = 'inaccessible';

-- The deletion warnings queued: one row per volume, for the time it became inaccessible.
CREATE TABLE credits.volume_deletion_warnings (
    project_id         bigint NOT NULL,
    resource_id        text NOT NULL,
    inaccessible_since timestamptz NOT NULL,
    warned_at          timestamptz NOT NULL,
    PRIMARY KEY (project_id, resource_id)
);

-- Deletes the volumes inaccessible for credits.volume_retention whose warning an earlier run
-- queued, then warns about those with less than 24 hours left, set-based, each with its
-- event.  Volumes locked by another transaction (a deposit restoring them) are left for the
-- next run.  Returns the projects acted on.  The caller holds the periodic-run lock.
CREATE FUNCTION credits._enforce_volume_retention(at timestamptz) RETURNS bigint[]
    LANGUAGE plpgsql AS $$
DECLARE
    retention interval := credits.volume_retention();
    deleted bigint[];
    warned bigint[];
BEGIN
    IF retention IS NULL THEN
        RETURN '{}';
    END IF;

    WITH due AS (
        SELECT r.project_id, r.resource_id, r.state_since
          FROM credits.resources r
          JOIN credits.volume_deletion_warnings w
            ON w.project_id = r.project_id AND w.resource_id = r.resource_id
           AND w.inaccessible_since = r.state_since AND w.warned_at < at
         WHERE r.state = 'inaccessible' AND r.state_since <= at - retention
         ORDER BY r.project_id, r.resource_id
         FOR UPDATE OF r SKIP LOCKED),
    gone AS (
        UPDATE credits.resources x SET state = 'deleted', state_since = at
          FROM due d
         WHERE x.project_id = d.project_id AND x.resource_id = d.resource_id
        RETURNING x.project_id, x.resource_id, d.state_since),
    forgotten AS (
        DELETE FROM credits.volume_deletion_warnings w USING gone g
         WHERE w.project_id = g.project_id AND w.resource_id = g.resource_id),
    queued AS (
        INSERT INTO credits.events (project_id, kind, resource_id, transaction_id, payload, created_at)
        SELECT g.project_id, 'volume_deleted', g.resource_id, NULL,
               jsonb_build_object('resource_id', g.resource_id, 'kind', 'volume',
                                  'inaccessible_since', g.state_since, 'at', at), at
          FROM gone g ORDER BY g.project_id, g.resource_id)
    SELECT coalesce(array_agg(DISTINCT g.project_id), '{}') INTO deleted FROM gone g;

    WITH due AS (
        SELECT r.project_id, r.resource_id, r.state_since
          FROM credits.resources r
         WHERE r.state = 'inaccessible' AND r.state_since <= at - retention + interval '24 hours'
           AND NOT EXISTS (SELECT FROM credits.volume_deletion_warnings w
                            WHERE w.project_id = r.project_id AND w.resource_id = r.resource_id
                              AND w.inaccessible_since = r.state_since)
         ORDER BY r.project_id, r.resource_id
         FOR UPDATE OF r SKIP LOCKED),
    marked AS (
        INSERT INTO credits.volume_deletion_warnings AS w (project_id, resource_id, inaccessible_since, warned_at)
        SELECT d.project_id, d.resource_id, d.state_since, at FROM due d
        ON CONFLICT ON CONSTRAINT volume_deletion_warnings_pkey DO UPDATE
           SET inaccessible_since = excluded.inaccessible_since, warned_at = excluded.warned_at
        RETURNING w.project_id, w.resource_id, w.inaccessible_since),
    queued AS (
        INSERT INTO credits.events (project_id, kind, resource_id, transaction_id, payload, created_at)
        SELECT m.project_id, 'volume_deletion_warning', m.resource_id, NULL,
               jsonb_build_object('resource_id', m.resource_id, 'kind', 'volume',
                                  'deletes_at', greatest(m.inaccessible_since + retention, at), 'at', at), at
          FROM marked m ORDER BY m.project_id, m.resource_id)
    SELECT coalesce(array_agg(DISTINCT m.project_id), '{}') INTO warned FROM marked m;

    IF cardinality(deleted) + cardinality(warned) > 0 THEN
        PERFORM pg_notify('credits_events', '');
    END IF;
    RETURN ARRAY(SELECT unnest(deleted) UNION SELECT unnest(warned) ORDER BY 1);
END $$;

COMMENT ON FUNCTION credits.volume_retention() IS
    'The setting credits.volume_retention: how long a volume stays inaccessible at zero balance before '
    'run_balance_checks deletes it; null when empty (kept until the balance is positive again).';
