\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/metering_helpers.sql
\set ECHO all
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
-- Alerts (credits.configure_alerts): balance_low and runway_low once per crossing,
-- balance_recovered once when both are clear again; checked by run_balance_checks, the
-- hourly deduction and deposit completion.  Projects 8100-8199, October 2026.

CREATE FUNCTION pg_temp.events(p bigint) RETURNS TABLE (kind text, payload jsonb)
    LANGUAGE sql AS $$
    SELECT e.kind, e.payload - 'at' FROM credits.events e
     WHERE e.project_id = p AND e.kind <> 'charge_requested' ORDER BY e.event_id;
$$;

-- Project 8101: 20.00, an instance at 2.00 per hour from 10:00; alerts below 8.00 and below
-- 5 hours of runway (available below 10.00).
SET credits.clock = '2026-10-01 10:00+00';
SELECT pg_temp.funded(8101, '20.00');
SELECT credits.configure_alerts(8101, below_balance => '8.00', below_runway => '5 hours');
SELECT credits.start_instance(8101, 'gpu-1', '2.00');
SELECT alert_state FROM credits.spending_overview WHERE project_id = 8101;
-- 15:00: 10.00 left, 5 hours: not below.
SET credits.clock = '2026-10-01 15:00+00';
SELECT pg_temp.deduct(8101, 8101);
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT * FROM pg_temp.events(8101);
-- 15:30: 9.00, 4.5 hours: runway_low, once.
SET credits.clock = '2026-10-01 15:30+00';
SELECT credits.run_balance_checks() >= 1 AS acted;
SET credits.clock = '2026-10-01 15:45+00';
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT * FROM pg_temp.events(8101);
SELECT alert_state FROM credits.spending_overview WHERE project_id = 8101;
-- 16:30: 7.00: balance_low too, found by the hourly deduction's run.
SET credits.clock = '2026-10-01 16:30+00';
SELECT pg_temp.deduct(8101, 8101);
SELECT * FROM pg_temp.events(8101);
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT count(*) AS events FROM pg_temp.events(8101);
SELECT alert_state FROM credits.spending_overview WHERE project_id = 8101;
-- A deposit clears both: balance_recovered at once, from complete_deposit.
SET credits.clock = '2026-10-01 16:40+00';
SELECT pg_temp.deposit(8101, '50.00');
SELECT * FROM pg_temp.events(8101) OFFSET 2;
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT count(*) AS events FROM pg_temp.events(8101);
SELECT alert_state FROM credits.spending_overview WHERE project_id = 8101;

-- Only one line crossed, then cleared while the other is crossed: balance_recovered waits for
-- both.  Project 8102: 30.00, alerts below 25.00 and below 10 hours, an instance at 1.00.
SET credits.clock = '2026-10-02 10:00+00';
SELECT pg_temp.funded(8102, '30.00');
SELECT credits.configure_alerts(8102, below_balance => '25.00', below_runway => '10 hours');
SELECT credits.start_instance(8102, 'gpu-1', '1.00');
SET credits.clock = '2026-10-02 16:00+00';                   -- 24.00: balance_low
SELECT credits.run_balance_checks() >= 1 AS acted;
SELECT credits.start_instance(8102, 'gpu-2', '2.00');        -- 3.00 per hour: 8 hours
SELECT credits.run_balance_checks() >= 1 AS acted;           -- runway_low
SELECT pg_temp.deposit(8102, '5.00');                        -- 29.00: balance clear, runway 9.67 h
SELECT credits.stop_instance(8102, 'gpu-2');                 -- 1.00 per hour: 29 hours
SELECT credits.run_balance_checks() >= 1 AS acted;           -- both clear: recovered
SELECT credits.start_instance(8102, 'gpu-2', '3.00');        -- 4.00 per hour: 7.25 hours
SELECT credits.run_balance_checks() >= 1 AS acted;           -- a new crossing: runway_low again
SELECT * FROM pg_temp.events(8102);

-- Alerts set while the line is already crossed are announced at once; with nothing burning,
-- the runway is not short.  Project 8103.
SET credits.clock = '2026-10-03 10:00+00';
SELECT pg_temp.funded(8103, '6.00');
SELECT credits.configure_alerts(8103, below_balance => '10.00', below_runway => '1 hour');
SELECT * FROM pg_temp.events(8103);
SELECT credits.configure_alerts(8103, below_balance => '10.00', below_runway => '2 hours');  -- kept: no repeat
SELECT count(*) AS events FROM pg_temp.events(8103);
SELECT project_id, alert_state, below_balance, below_runway FROM credits.spending_overview
 WHERE project_id BETWEEN 8100 AND 8199 ORDER BY 1;
SELECT * FROM credits.verify(8101) UNION ALL SELECT * FROM credits.verify(8102);
