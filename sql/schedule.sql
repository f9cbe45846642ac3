\set ECHO none
\ir test/sql/helpers.sql
\set ECHO all
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
-- schedule_jobs() / unschedule_jobs(): named pg_cron jobs with schema-qualified commands;
-- without pg_cron in this database a notice whose hint gives the administrator's calls.
-- (test/conf/regress.conf preloads pg_cron with cron.database_name = contrib_regression.)

-- The jobs.
SELECT * FROM _jobs();

-- Installing credits scheduled nothing, and pg_cron is not installed here yet.
SELECT count(*) AS pg_cron_installed FROM pg_extension WHERE extname = 'pg_cron';
SELECT schedule_jobs();
SELECT unschedule_jobs();

-- Only the owner (or whom it grants) may schedule.
SET ROLE credits_app;
SELECT pg_temp.fails('SELECT credits.schedule_jobs()'), pg_temp.fails('SELECT credits.unschedule_jobs()');
RESET ROLE;

-- With pg_cron.  (In one transaction that is rolled back: a committed every-minute job would
-- fire run_balance_checks at the real time while the other tests run.)
CREATE EXTENSION pg_cron;
BEGIN;
SELECT schedule_jobs();
SELECT jobname, schedule, command, database, username = current_user AS scheduler_is_me, active
  FROM cron.job WHERE jobname LIKE 'credits-%' ORDER BY jobname;
-- Scheduling again updates the same two jobs.
SELECT schedule_jobs();
SELECT count(*) AS credits_jobs, count(DISTINCT jobid) AS job_ids FROM cron.job WHERE jobname LIKE 'credits-%';
-- A job runs in a fresh session with the default search_path: its command must resolve there.
SET LOCAL search_path = "$user", public;
DO $$
DECLARE
    j record;
BEGIN
    FOR j IN SELECT command FROM cron.job WHERE jobname LIKE 'credits-%' LOOP
        EXECUTE 'EXPLAIN ' || j.command;
    END LOOP;
END $$;
SET LOCAL search_path = public, credits;
-- Other jobs are left alone.
SELECT cron.schedule('someone-elses-job', '5 4 * * *', 'SELECT 1') > 0 AS scheduled;
SELECT unschedule_jobs();
SELECT jobname FROM cron.job ORDER BY jobname;
-- Unscheduling again finds nothing to remove and does not fail.
SELECT unschedule_jobs();
ROLLBACK;
DROP EXTENSION pg_cron;
SELECT count(*) AS pg_cron_installed FROM pg_extension WHERE extname = 'pg_cron';
SELECT * FROM verify();
