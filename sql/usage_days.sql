\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/metering_helpers.sql
\set ECHO all
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
-- Daily usage summaries (README "Statements"): run_usage_summaries() sums each whole day a
-- project has deducted; statements read those days from the summaries and give exactly what
-- they gave from the usage rows.  Run over every project the earlier tests left: hours paid
-- by lots, uncollected hours, API hours, booked hours, expiries and refunds.

-- Statements over random periods around each project's deducted hours, before any summary.
SELECT setseed(0.5);
CREATE TEMP TABLE periods AS
SELECT row_number() OVER () AS period, a.project_id, x.a, x.a + x.len AS b
  FROM credits.accounts a,
       LATERAL (SELECT date_trunc('hour', a.deducted_from) - interval '1 day'
                       + (random() * (extract(epoch FROM a.deducted_until - a.deducted_from) / 3600 + 48))
                         * interval '1 hour' AS a,
                       (0.25 + random() * 72) * interval '1 hour' AS len
                  FROM generate_series(1, 6)) AS x
 WHERE a.deducted_from IS NOT NULL;
-- (a statement that raises is compared by its SQLSTATE: the runaway projects' sums pass the
-- range of credits)
CREATE FUNCTION pg_temp.statements() RETURNS TABLE (period bigint, ord bigint, line text, resource_id text, amount credits)
    LANGUAGE plpgsql AS $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT * FROM periods ORDER BY periods.period LOOP
        BEGIN
            RETURN QUERY SELECT p.period, s.ord, s.line, s.resource_id, s.amount
                           FROM credits.statement(p.project_id, p.a, p.b) WITH ORDINALITY AS s(line, resource_id, amount, ord);
        EXCEPTION WHEN OTHERS THEN
            RETURN QUERY SELECT p.period, 0::bigint, 'error ' || SQLSTATE, NULL::text, NULL::credits;
        END;
    END LOOP;
END $$;
CREATE TEMP TABLE unsummarized AS SELECT * FROM pg_temp.statements();
-- statements that differ from the unsummarized ones, line by line
CREATE FUNCTION pg_temp.differing() RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM unsummarized u FULL JOIN pg_temp.statements() s USING (period, ord)
     WHERE u.period IS NULL OR s.period IS NULL
        OR (u.line, u.resource_id, u.amount) IS DISTINCT FROM (s.line, s.resource_id, s.amount);
$$;
-- the periods whose statements read summed days (every day from from_time on that to_time
-- does not cut: inside the period, or after it, for the opening balance)
CREATE FUNCTION pg_temp.reading_sums() RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM periods p
     WHERE EXISTS (SELECT FROM credits.usage_days d
                    WHERE d.project_id = p.project_id AND d.day >= p.a
                      AND NOT (d.day < p.b AND d.day + interval '1 day' > p.b));
$$;
SELECT count(DISTINCT p.project_id) > 50 AS many_projects, (SELECT count(*) FROM unsummarized WHERE line LIKE 'error%') AS raised,
       (SELECT count(*) FROM unsummarized WHERE line = 'usage') > 100 AS many_usage_lines
  FROM periods p;
SELECT count(*) AS summaries, (SELECT count(*) FROM credits.usage_days_summarized) AS summarized FROM credits.usage_days;

-- At most max_days days per call, the oldest first; the statements do not change, with some
-- days summed and with all.
CREATE FUNCTION pg_temp.days_summed() RETURNS bigint LANGUAGE sql AS $$
    SELECT count(DISTINCT d) FROM credits.usage_days_summarized s,
           generate_series(s.summarized_from, s.summarized_until - interval '1 day', interval '1 day') AS d;
$$;
SELECT credits.run_usage_summaries(1) > 0 AS summed;
SELECT pg_temp.days_summed() AS days,
       min(summarized_from) = (SELECT min(date_trunc('day', deducted_from, 'UTC')) FROM credits.accounts
                                WHERE date_trunc('day', deducted_from, 'UTC') + interval '1 day' <= deducted_until) AS oldest
  FROM credits.usage_days_summarized;
SELECT credits.run_usage_summaries(99) > 0 AS summed;
SELECT pg_temp.days_summed() AS days;
SELECT pg_temp.reading_sums() AS reading_part \gset
SELECT :reading_part > 0 AS some_read_sums, pg_temp.differing() AS differing_after_100_days;
-- then every whole deducted day; a call with nothing left sums nothing
SELECT credits.run_usage_summaries(1000) > 0 AS summed;
SELECT credits.run_usage_summaries() AS summed_again;
SELECT pg_temp.reading_sums() > greatest(:reading_part, 50) AS more_read_sums, pg_temp.differing() AS differing_after_all;
-- each project's summaries: whole days within its deducted hours, up to the last whole one
SELECT count(*) > 20 AS projects_summarized,
       count(*) FILTER (WHERE s.summarized_from < date_trunc('day', a.deducted_from, 'UTC')
                           OR s.summarized_until > a.deducted_until
                           OR s.summarized_until + interval '1 day' <= a.deducted_until) AS wrong_ranges
  FROM credits.usage_days_summarized s JOIN credits.accounts a USING (project_id);
SELECT count(*) AS whole_days_left_out
  FROM credits.accounts a
 WHERE a.deducted_from IS NOT NULL
   AND date_trunc('day', a.deducted_from - interval '1 microsecond', 'UTC') + interval '2 days' <= a.deducted_until
   AND NOT EXISTS (SELECT FROM credits.usage_days_summarized s WHERE s.project_id = a.project_id);

-- A later day: deducted, then summed, and the statement of the whole history still closes at
-- the balance.
SELECT a.project_id AS p, a.deducted_until AS until FROM credits.accounts a
  JOIN credits.usage_days_summarized s USING (project_id)
 WHERE NOT a.depleted AND EXISTS (SELECT FROM credits.resources r WHERE r.project_id = a.project_id AND r.state = 'running')
 ORDER BY a.project_id LIMIT 1 \gset
SELECT set_config('credits.clock', (:'until'::timestamptz + interval '1 day 5 minutes')::text, false) IS NOT NULL AS clock_set;
SELECT credits.run_hourly_deductions() > 0 AS deducted;
SELECT s.summarized_until AS summarized_until FROM credits.usage_days_summarized s WHERE s.project_id = :p \gset
SELECT credits.run_usage_summaries() > 0 AS summed_later;
SELECT s.summarized_until = :'summarized_until'::timestamptz + interval '1 day' AS one_more_day
  FROM credits.usage_days_summarized s WHERE s.project_id = :p;
SELECT (SELECT amount FROM credits.statement(:p, '2000-01-01', '2100-01-01') WHERE line = 'closing_balance') = a.balance
           AS closes_at_balance
  FROM credits.accounts a WHERE a.project_id = :p;
RESET credits.clock;

-- A late API call into a summed day: a call that began before the deduction of its hour and
-- committed after it, for a product with no usage in that hour, is charged in that hour (as
-- the isolation spec metering_usage_vs_deduction shows).  The next hourly run has the day
-- summed again before it completes the hour, so the summary never disagrees with the hours
-- (verify() proves each), and the statement of the day takes the call in.  First the day is
-- the first of the project's summed range (the range goes), then a later one (the range is
-- cut back to it, the days before it stay summed).
SELECT date_trunc('day', :'until'::timestamptz + interval '3 days', 'UTC') AS d \gset
SELECT set_config('credits.clock', (:'d'::timestamptz + interval '10 hours')::text, false) IS NOT NULL AS clock_set;
SELECT pg_temp.funded(9810, '100.00');
SELECT credits.record_usage(9810, 'api:chat', '1.00');
SELECT set_config('credits.clock', (:'d'::timestamptz + interval '1 day 5 minutes')::text, false) IS NOT NULL AS clock_set;
SELECT credits.run_hourly_deductions() > 0 AS deducted;
SELECT credits.run_usage_summaries() > 0 AS summed;
SELECT summarized_from = :'d' AS from_the_day, summarized_until = :'d'::timestamptz + interval '1 day' AS to_its_end
  FROM credits.usage_days_summarized WHERE project_id = 9810;
SELECT resource_id, amount FROM credits.usage_days WHERE project_id = 9810 ORDER BY resource_id;
-- (the call's transaction began at 23:59:59 of the summed day)
SELECT set_config('credits.clock', (:'d'::timestamptz + interval '23:59:59')::text, false) IS NOT NULL AS clock_set;
SELECT credits.record_usage(9810, 'api:embed', '0.40');
SELECT set_config('credits.clock', (:'d'::timestamptz + interval '1 day 10 minutes')::text, false) IS NOT NULL AS clock_set;
SELECT credits.run_balance_checks() >= 0 AS folded;
SELECT usage_hour - :'d'::timestamptz AS rolled_up_into, credits._accrued_amount(units) AS amount
  FROM credits.usage_rollup WHERE project_id = 9810;
SELECT set_config('credits.clock', (:'d'::timestamptz + interval '1 day 1 hour 5 minutes')::text, false) IS NOT NULL AS clock_set;
SELECT credits.run_hourly_deductions() > 0 AS deducted;
SELECT usage_hour - :'d'::timestamptz AS hour, resource_id, amount, status FROM credits.transactions
 WHERE project_id = 9810 AND type = 'usage' ORDER BY usage_hour, resource_id;
SELECT count(*) AS summaries_left FROM credits.usage_days WHERE project_id = 9810;
SELECT count(*) AS ranges_left FROM credits.usage_days_summarized WHERE project_id = 9810;
SELECT count(*) AS problems FROM credits.verify(9810);
SELECT credits.run_usage_summaries() > 0 AS summed_again;
SELECT resource_id, amount FROM credits.usage_days WHERE project_id = 9810 ORDER BY resource_id;
SELECT line, resource_id, amount FROM credits.statement(9810, :'d', :'d'::timestamptz + interval '1 day');
SELECT count(*) AS problems FROM credits.verify(9810);
SELECT balance FROM credits.accounts WHERE project_id = 9810;
-- The next day summed too: the range covers both days.
SELECT set_config('credits.clock', (:'d'::timestamptz + interval '1 day 12 hours')::text, false) IS NOT NULL AS clock_set;
SELECT credits.record_usage(9810, 'api:chat', '2.00');
SELECT set_config('credits.clock', (:'d'::timestamptz + interval '2 days 5 minutes')::text, false) IS NOT NULL AS clock_set;
SELECT credits.run_hourly_deductions() > 0 AS deducted;
SELECT credits.run_usage_summaries() > 0 AS summed;
SELECT summarized_until - summarized_from AS summed_range FROM credits.usage_days_summarized WHERE project_id = 9810;
-- A late call into the second day: only that day's sums go, and the range ends where it begins.
SELECT set_config('credits.clock', (:'d'::timestamptz + interval '1 day 23:30')::text, false) IS NOT NULL AS clock_set;
SELECT credits.record_usage(9810, 'api:image', '0.25');
SELECT set_config('credits.clock', (:'d'::timestamptz + interval '2 days 1 hour 5 minutes')::text, false) IS NOT NULL AS clock_set;
SELECT credits.run_hourly_deductions() > 0 AS deducted;
SELECT summarized_from = :'d' AS from_the_first_day, summarized_until - summarized_from AS summed_range
  FROM credits.usage_days_summarized WHERE project_id = 9810;
SELECT day - :'d'::timestamptz AS day, resource_id, amount FROM credits.usage_days
 WHERE project_id = 9810 ORDER BY day, resource_id;
SELECT count(*) AS problems FROM credits.verify(9810);
SELECT credits.run_usage_summaries() > 0 AS summed_again;
SELECT day - :'d'::timestamptz AS day, resource_id, amount FROM credits.usage_days
 WHERE project_id = 9810 ORDER BY day, resource_id;
SELECT line, resource_id, amount FROM credits.statement(9810, :'d'::timestamptz + interval '1 day', :'d'::timestamptz + interval '2 days')
 WHERE line IN ('opening_balance', 'usage', 'closing_balance');
SELECT balance FROM credits.accounts WHERE project_id = 9810;
SELECT count(*) AS problems FROM credits.verify(9810);
RESET credits.clock;

-- verify() proves each summary from its hours: clean, and a changed or missing summary shows.
SELECT count(*) AS summary_problems FROM credits.verify() WHERE problem LIKE 'the usage summary%';
SELECT d.project_id AS p, d.day, d.resource_id AS r FROM credits.usage_days d ORDER BY d.project_id, d.day, d.resource_id LIMIT 1 \gset
BEGIN;
UPDATE credits.usage_days SET amount = amount - '0.01' WHERE project_id = :p AND day = :'day' AND resource_id = :'r';
SELECT problem FROM credits.verify(:p) WHERE problem LIKE 'the usage summary%';
ROLLBACK;
BEGIN;
DELETE FROM credits.usage_days WHERE project_id = :p AND day = :'day' AND resource_id = :'r';
SELECT problem FROM credits.verify(:p) WHERE problem LIKE 'the usage summary%';
ROLLBACK;
BEGIN;
INSERT INTO credits.usage_days (project_id, day, resource_id, amount, uncollected)
VALUES (:p, '2000-01-01 00:00+00', :'r', '-1.00', '0');
SELECT problem FROM credits.verify(:p) WHERE problem LIKE 'the usage summary%';
ROLLBACK;

-- Bad input writes nothing; only the owner and credits_worker run it.
SELECT count(*) AS summaries FROM credits.usage_days \gset
SELECT label, pg_temp.fails(stmt) FROM (VALUES
    ('no days', $$SELECT credits.run_usage_summaries(0)$$),
    ('null', $$SELECT credits.run_usage_summaries(NULL)$$),
    ('by credits_app', $$SET LOCAL ROLE credits_app; SELECT credits.run_usage_summaries()$$),
    ('by credits_reader', $$SET LOCAL ROLE credits_reader; SELECT credits.run_usage_summaries()$$)
) AS c(label, stmt);
SELECT count(*) = :summaries AS nothing_written FROM credits.usage_days;
