\echo
\echo '== The whole history (the hourly usage charges added up per day)'
\echo '   Shows: the amounts of the completed rows add up to the balance; verify() finds no fault.'
SELECT to_char(min(date), 'Mon DD HH24:MI') AS date,
       CASE WHEN type = 'usage' THEN format('Usage: %s hourly charges', count(*)) ELSE min(description) END
         AS description,
       round(sum(amount)::numeric, 2) AS amount, status,
       round(nullif(sum(uncollected), '0')::numeric, 2) AS uncollected
  FROM credits.transaction_history WHERE project_id = 42
 GROUP BY CASE WHEN type = 'usage' THEN date_trunc('day', date) ELSE date END, type, status
 ORDER BY min(date);
SELECT round(sum(amount)::numeric, 2) AS total,
       CASE WHEN sum(amount) = (SELECT current_balance FROM credits.balance_overview WHERE project_id = 42)
            THEN 'the balance' ELSE 'NOT the balance' END AS is
  FROM credits.transaction_history WHERE project_id = 42 AND status = 'completed' \gset
\echo 'The amounts of the completed rows add up to' :total 'which is' :is
SELECT CASE WHEN count(*) = 0 THEN 'no rows: every invariant holds'
            ELSE string_agg(problem, '; ') END AS verdict
  FROM credits.verify(42) \gset
\echo 'credits.verify(42):' :verdict
