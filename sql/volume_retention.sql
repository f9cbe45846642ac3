\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/metering_helpers.sql
\set ECHO all
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
-- Volumes kept at zero balance: the setting credits.volume_retention (superuser only; empty:
-- kept until the balance is positive again), deletes_at in volume_inaccessible, the warning
-- 24 hours before, deletion by run_balance_checks, a deposit in time.  Projects 8200-8299,
-- November 2026.  (Runs last: its balance checks delete any volume inaccessible that long.)

CREATE FUNCTION pg_temp.events(p bigint) RETURNS TABLE (kind text, resource_id text, payload jsonb)
    LANGUAGE sql AS $$
    SELECT e.kind, e.resource_id, e.payload FROM credits.events e
     WHERE e.project_id = p AND e.kind IN ('volume_inaccessible', 'volume_available',
                                           'volume_deletion_warning', 'volume_deleted')
     ORDER BY e.event_id;
$$;
-- A project with 5.00 and a volume at 2.50 per hour from 10:00, cut off at 12:00 on day d of
-- November by the balance check (its accrued usage used the balance up).
CREATE FUNCTION pg_temp.cut_off_volume(p bigint, d int) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('credits.clock', format('2026-11-%s 10:00+00', d), true);
    PERFORM pg_temp.funded(p, '5.00');
    PERFORM credits.attach_volume(p, 'vol-1', '2.50');
    PERFORM set_config('credits.clock', format('2026-11-%s 12:00+00', d), true);
    PERFORM credits.run_balance_checks();
    RETURN (SELECT state FROM credits.resource_overview WHERE project_id = p AND resource_id = 'vol-1');
END $$;

-- The setting: empty by default, an interval, only for superusers.
SHOW credits.volume_retention;
SELECT credits.volume_retention() IS NULL AS kept_until_deposit;
SELECT pg_temp.fails(stmt) AS result, stmt
  FROM unnest(ARRAY[
    $$SET credits.volume_retention = 'soon'$$,
    $$SET credits.volume_retention = '-1 day'$$,
    $$SET credits.volume_retention = '0'$$,
    $$SET LOCAL ROLE credits_app; SET credits.volume_retention = '1 day'$$,
    $$SET LOCAL ROLE credits_worker; SELECT set_config('credits.volume_retention', '1 day', false)$$]) AS stmt;
RESET ROLE;
SELECT short_desc, extra_desc, context FROM pg_settings WHERE name = 'credits.volume_retention';
SHOW credits.volume_retention;

-- Empty: an inaccessible volume stays, however long.
SELECT pg_temp.cut_off_volume(8201, 1);
SET credits.clock = '2026-11-20 12:00+00';
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT resource_id, kind, payload FROM pg_temp.events(8201);
SELECT state FROM credits.resource_overview WHERE project_id = 8201;

-- Three days: deletes_at in the event; the warning 24 hours before, once; deletion at
-- deletes_at (state deleted, volume_deleted).
SET credits.volume_retention = '3 days';
SELECT pg_temp.cut_off_volume(8202, 2);
SELECT kind, resource_id, payload FROM pg_temp.events(8202);
SET credits.clock = '2026-11-04 11:59+00';
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT count(*) AS events FROM pg_temp.events(8202);
SET credits.clock = '2026-11-04 12:00+00';
SELECT credits.run_balance_checks() >= 1 AS acted;
SET credits.clock = '2026-11-05 11:59+00';
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT kind, resource_id, payload FROM pg_temp.events(8202) OFFSET 1;
SET credits.clock = '2026-11-05 12:00+00';
SELECT credits.run_balance_checks() >= 1 AS acted;
SELECT kind, resource_id, payload FROM pg_temp.events(8202) OFFSET 2;
SELECT resource_id, state, state_since FROM credits.resource_overview WHERE project_id = 8202;
-- A deposit after the deletion does not bring it back; the id cannot be used again.
SELECT pg_temp.deposit(8202, '10.00') IS NOT NULL AS deposited;
SELECT state FROM credits.resource_overview WHERE project_id = 8202;
SELECT pg_temp.fails($$SELECT credits.attach_volume(8202, 'vol-1', '1.00')$$) AS reattach;

-- A deposit in time brings the volume back, and it is not deleted.
SELECT pg_temp.cut_off_volume(8203, 6);
SET credits.clock = '2026-11-08 13:00+00';
SELECT credits.run_balance_checks() >= 1 AS warned;
SET credits.clock = '2026-11-09 11:00+00';
SELECT pg_temp.deposit(8203, '20.00') IS NOT NULL AS deposited;
SET credits.clock = '2026-11-09 12:00+00';
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT kind, resource_id, payload - 'at' - 'deletes_at' FROM pg_temp.events(8203);
SELECT state FROM credits.resource_overview WHERE project_id = 8203;

-- Less than 24 hours of retention: the warning at once, the deletion by a later run.
SET credits.volume_retention = '1 hour';
SELECT pg_temp.cut_off_volume(8204, 10);
SET credits.clock = '2026-11-10 13:00+00';
SELECT credits.run_balance_checks() >= 1 AS acted;
SELECT kind, resource_id, payload FROM pg_temp.events(8204);
SELECT resource_id, state, state_since FROM credits.resource_overview WHERE project_id = 8204;
-- The volume of 8201, inaccessible since the 1st, is warned about and deleted by a later run.
SELECT kind FROM pg_temp.events(8201);
SELECT state FROM credits.resource_overview WHERE project_id = 8201;
SELECT * FROM credits.verify(8202) UNION ALL SELECT * FROM credits.verify(8204);
RESET credits.volume_retention;
