-- ---------------------------------------------------------------------------------------------
-- Scheduling the periodic work with pg_cron (optional: detected at run time).  Installing the
-- extension schedules nothing; an administrator calls credits.schedule_jobs().  Jobs run as the
-- role that scheduled them, in a fresh session: the commands are schema-qualified.
-- ---------------------------------------------------------------------------------------------

-- The jobs: name, cron schedule (UTC), command.
CREATE FUNCTION credits._jobs() RETURNS TABLE (job_name text, schedule text, command text)
    LANGUAGE sql IMMUTABLE AS $$
    VALUES ('credits-hourly-deductions', '0 * * * *', 'SELECT credits.run_hourly_deductions()'),
           ('credits-balance-checks',    '* * * * *', 'SELECT credits.run_balance_checks()'),
           ('credits-usage-summaries',   '20 * * * *', 'SELECT credits.run_usage_summaries()');
$$;

-- The administrator's cron.schedule_in_database() calls for this database, as one hint.
CREATE FUNCTION credits._schedule_hint() RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT format('Connect to the database where pg_cron is installed (cron.database_name = %s) as a role '
                  'that may run the credits jobs, and run: ',
                  coalesce(nullif(current_setting('cron.database_name', true), ''), 'postgres'))
           || string_agg(format('SELECT cron.schedule_in_database(%L, %L, %L, %L);',
                                j.job_name, j.schedule, j.command, current_database()), ' ')
      FROM credits._jobs() j;
$$;

-- Registers run_hourly_deductions (every hour), run_balance_checks (every minute) and
-- run_usage_summaries (every hour, at 20 past) as named pg_cron jobs.  Scheduling again
-- updates them.  Without pg_cron in this database: a notice whose hint gives the exact calls
-- for an administrator.
CREATE FUNCTION credits.schedule_jobs() RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    j record;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE NOTICE 'pg_cron is not installed in database %; nothing was scheduled', current_database()
            USING HINT = credits._schedule_hint();
        RETURN;
    END IF;
    FOR j IN SELECT * FROM credits._jobs() LOOP
        EXECUTE 'SELECT cron.schedule($1, $2, $3)' USING j.job_name, j.schedule, j.command;
    END LOOP;
END $$;

-- Removes the jobs schedule_jobs registered (those that exist).
CREATE FUNCTION credits.unschedule_jobs() RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    j record;
    present boolean;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE NOTICE 'pg_cron is not installed in database %; nothing to unschedule', current_database()
            USING HINT = 'Jobs scheduled with cron.schedule_in_database() are removed with cron.unschedule(job_name) '
                         'in the database where pg_cron is installed.';
        RETURN;
    END IF;
    FOR j IN SELECT * FROM credits._jobs() LOOP
        EXECUTE 'SELECT EXISTS (SELECT FROM cron.job WHERE jobname = $1 AND username = current_user)'
            INTO present USING j.job_name;
        IF present THEN
            EXECUTE 'SELECT cron.unschedule($1)' USING j.job_name;
        END IF;
    END LOOP;
END $$;
