-- ---------------------------------------------------------------------------------------------
-- Daily usage summaries, for statements.  A statement sums a project's usage since its first
-- day; read hour by hour, a year is 8,760 probes of the usage index and as many heap pages
-- (each hour's rows are written with every other project's).  So each UTC day that a project
-- has deducted whole is summed once, by resource, into credits.usage_days, by
-- credits.run_usage_summaries() (a pg_cron job, credits.schedule_jobs): completed usage rows
-- never change, so a day's sums never do either, but for one case: a late API call can add a
-- row to a deducted hour, and the hourly run then has its day summed again
-- (credits._unsum_late_usage).  Each project's summaries cover one range of
-- whole days, [summarized_from, summarized_until) in credits.usage_days_summarized; statements
-- read those days from the summaries and every other hour from the usage rows, so a statement
-- is the same with or without them.  credits.verify() checks each summary against its hours.
-- ---------------------------------------------------------------------------------------------

-- What a project's completed usage of one resource took from the balance on one UTC day, and
-- what the balance could not pay.
CREATE TABLE credits.usage_days (
    project_id  bigint NOT NULL,
    day         timestamptz NOT NULL CHECK (day = date_trunc('day', day, 'UTC')),
    resource_id text NOT NULL,
    amount      credits.credits NOT NULL CHECK (amount <= '0'::credits.credits),
    uncollected credits.credits NOT NULL CHECK (uncollected >= '0'::credits.credits),
    PRIMARY KEY (project_id, day, resource_id)
);

-- The whole days [summarized_from, summarized_until) of each project whose usage is summed in
-- credits.usage_days (a project without a row has none).  (No foreign key to the accounts,
-- which are never deleted: its check would lock the account row, and the job would wait for
-- a transaction that holds it.)
CREATE TABLE credits.usage_days_summarized (
    project_id       bigint PRIMARY KEY,
    summarized_from  timestamptz NOT NULL CHECK (summarized_from = date_trunc('day', summarized_from, 'UTC')),
    summarized_until timestamptz NOT NULL CHECK (summarized_until = date_trunc('day', summarized_until, 'UTC')),
    CHECK (summarized_from < summarized_until)
);

-- Sums the next whole deducted day of every project whose summaries have not reached it, the
-- oldest day first, at most max_days days per call; returns the number of project-days
-- summed.  A project's next day is the day after its summaries (or the day of its first
-- deducted hour), once its deducted hours pass that day's end.  Calls take turns (the table
-- lock); reads and deductions do not wait for them.  Each day's rows are read by hour and
-- project from the usage index.
CREATE FUNCTION credits.run_usage_summaries(max_days integer DEFAULT 7) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp SET jit = off AS $$
DECLARE
    next_day timestamptz;
    ids bigint[];
    summed bigint := 0;
BEGIN
    PERFORM credits._require('max_days', max_days IS NULL);
    IF max_days < 1 THEN
        RAISE EXCEPTION 'max_days must be at least 1, got %', max_days USING ERRCODE = 'invalid_parameter_value';
    END IF;
    LOCK TABLE credits.usage_days_summarized IN SHARE ROW EXCLUSIVE MODE;
    FOR i IN 1 .. max_days LOOP
        SELECT x.day, array_agg(x.project_id ORDER BY x.project_id) INTO next_day, ids
          FROM (SELECT a.project_id,
                       coalesce(s.summarized_until, date_trunc('day', a.deducted_from, 'UTC')) AS day,
                       a.deducted_until
                  FROM credits.accounts a
                  LEFT JOIN credits.usage_days_summarized s ON s.project_id = a.project_id
                 WHERE a.deducted_from IS NOT NULL) AS x
         WHERE x.day + interval '1 day' <= x.deducted_until
         GROUP BY x.day ORDER BY x.day LIMIT 1;
        EXIT WHEN next_day IS NULL;
        INSERT INTO credits.usage_days (project_id, day, resource_id, amount, uncollected)
        SELECT t.project_id, next_day, t.resource_id, sum(t.amount), sum(t.uncollected)
          FROM credits.transactions t
         WHERE t.type = 'usage' AND t.status = 'completed'
           AND t.usage_hour = ANY (ARRAY(SELECT generate_series(next_day, next_day + interval '23 hours',
                                                                interval '1 hour')))
           AND t.project_id = ANY (ids)
         GROUP BY t.project_id, t.resource_id;
        INSERT INTO credits.usage_days_summarized AS s (project_id, summarized_from, summarized_until)
        SELECT p, next_day, next_day + interval '1 day' FROM unnest(ids) AS p
            ON CONFLICT (project_id) DO UPDATE SET summarized_until = excluded.summarized_until;
        summed := summed + cardinality(ids);
    END LOOP;
    RETURN summed;
END $$;

-- The projects whose roll-up holds API usage for a day their summaries already cover, with
-- where their summaries begin and the first such day.  (Each hourly run asks: the roll-up rows
-- after every summed range, the last hour's nearly all, are passed over before the join.)
CREATE FUNCTION credits._late_summed_days()
    RETURNS TABLE (project_id bigint, summarized_from timestamptz, day timestamptz)
    LANGUAGE sql STABLE AS $$
    SELECT s.project_id, s.summarized_from, date_trunc('day', min(u.usage_hour), 'UTC')
      FROM credits.usage_rollup u
      JOIN credits.usage_days_summarized s ON s.project_id = u.project_id
     WHERE u.usage_hour < s.summarized_until
       AND u.usage_hour < (SELECT max(x.summarized_until) FROM credits.usage_days_summarized x)
     GROUP BY s.project_id, s.summarized_from;
$$;

-- Has the summaries of every project whose roll-up holds API usage for a day they already
-- cover summed again from that day (its rows deleted, its range cut back there): the
-- deduction that follows completes that hour, which changes the day's sums.  (A call that
-- committed after its hour was deducted, for a product with no usage in that hour, is charged
-- in that hour, 41_usage_booking.sql.  Rare: only then is the summaries' lock taken, waiting
-- for a run_usage_summaries call in progress; the days are read again under it.)  Called by
-- run_hourly_deductions after the fold and before the deduction, under the periodic-run lock.
CREATE FUNCTION credits._unsum_late_usage() RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM credits._late_summed_days()) THEN
        RETURN;
    END IF;
    LOCK TABLE credits.usage_days_summarized IN SHARE ROW EXCLUSIVE MODE;
    WITH late AS (SELECT * FROM credits._late_summed_days()),
    unsummed AS (
        DELETE FROM credits.usage_days d USING late l
         WHERE d.project_id = l.project_id AND d.day >= l.day),
    cut_back AS (
        UPDATE credits.usage_days_summarized s SET summarized_until = l.day
          FROM late l WHERE s.project_id = l.project_id AND l.day > l.summarized_from)
    DELETE FROM credits.usage_days_summarized s USING late l
     WHERE s.project_id = l.project_id AND l.day <= l.summarized_from;
END $$;
