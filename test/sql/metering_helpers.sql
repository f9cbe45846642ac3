-- Helpers shared by the metering regress tests (metering_*, zero_balance, burn_rate), included
-- after test/sql/helpers.sql with \ir, inside the \set ECHO none section.

-- A project with an account, a card and a completed deposit of amount.
CREATE FUNCTION pg_temp.funded(project_id bigint, amount credits) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM credits.open_account(project_id);
    PERFORM credits.add_payment_method(project_id, 'pm_' || project_id);
    PERFORM credits.complete_deposit(project_id, credits.add_credits(project_id, amount));
END $$;

-- A project's usage rows as transaction_history shows them, oldest first.
CREATE FUNCTION pg_temp.usage(p bigint)
    RETURNS TABLE (stored boolean, date timestamptz, description text, amount credits,
                   status credits.transaction_status, uncollected credits)
    LANGUAGE sql AS $$
    SELECT h.transaction_id IS NOT NULL, h.date, left(h.description, 30), h.amount, h.status, h.uncollected
      FROM credits.transaction_history h
     WHERE h.project_id = p AND h.type = 'usage'
     ORDER BY h.date, h.description;
$$;

-- Runs the hourly deductions; returns how many usage transactions of projects lo..hi it
-- completed (other test files' projects may share the database), and flags a run that
-- returned fewer than that.
CREATE FUNCTION pg_temp.deduct(lo bigint DEFAULT 5000, hi bigint DEFAULT 5999) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    before bigint;
    returned bigint;
    mine bigint;
BEGIN
    SELECT count(*) INTO before FROM credits.transactions
     WHERE project_id BETWEEN lo AND hi AND type = 'usage' AND status = 'completed';
    returned := credits.run_hourly_deductions();
    SELECT count(*) - before INTO mine FROM credits.transactions
     WHERE project_id BETWEEN lo AND hi AND type = 'usage' AND status = 'completed';
    RETURN mine || ' completed' || CASE WHEN returned < mine THEN format(' (but it returned %s)', returned) ELSE '' END;
END $$;

-- A project's balance and usage totals by status.
CREATE FUNCTION pg_temp.totals(p bigint) RETURNS text LANGUAGE sql AS $$
    SELECT format('balance=%s depleted=%s completed=%s (uncollected %s) accumulating=%s',
                  a.balance, a.depleted,
                  (SELECT coalesce(sum(t.amount), '0') FROM credits.transactions t
                    WHERE t.project_id = p AND t.type = 'usage' AND t.status = 'completed'),
                  (SELECT coalesce(sum(t.uncollected), '0') FROM credits.transactions t
                    WHERE t.project_id = p AND t.type = 'usage'),
                  credits._accumulating(p))
      FROM credits.accounts a WHERE a.project_id = p;
$$;

-- Completes a deposit of amount for project p at the current clock; returns the new balance.
CREATE FUNCTION pg_temp.deposit(p bigint, amount credits) RETURNS credits LANGUAGE sql AS $$
    SELECT credits.complete_deposit(p, credits.add_credits(p, amount), 'https://invoices.example/' || p);
$$;
