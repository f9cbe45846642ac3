-- Helpers of the ledger_* and roles regress tests, included after test/sql/helpers.sql:
--   \set ECHO none
--   \ir test/sql/helpers.sql
--   \ir test/sql/ledger_helpers.sql
--   \set ECHO all
--
-- Transaction, payment method and event ids come from sequences shared by every test file
-- of the run, so their values depend on what ran before and are never printed.  A test keeps
-- each id it needs under a name (pg_temp.keep), prints ids by name (pg_temp.n) and reads
-- error messages with the ids replaced by their names (pg_temp.refused).

-- Times print in UTC, ISO style, as billing hours are UTC hours.
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET client_min_messages = warning;

CREATE TEMP TABLE kept_ids (
    kind text NOT NULL CHECK (kind IN ('transaction', 'method', 'event')),
    name text NOT NULL UNIQUE,
    id   bigint NOT NULL,
    PRIMARY KEY (kind, id)
);

-- Keeps id under name and returns it, for \gset.  A null id (a call that returned nothing)
-- is an error here, so it cannot go unnoticed.
CREATE FUNCTION pg_temp.keep(kind text, name text, id bigint) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO pg_temp.kept_ids VALUES (kind, name, id) RETURNING id;
$$;

-- The name an id of that kind is kept under, '#<id>' for one never kept, null for null.
CREATE FUNCTION pg_temp.n(kind text, id bigint) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT k.name FROM pg_temp.kept_ids k WHERE k.kind = n.kind AND k.id = n.id),
                    '#' || id);
$$;

-- msg with every kept id written as its name where the message names it ("deposit 12",
-- "transaction 12", "Transaction 12", "method 3", "event 7").
CREATE FUNCTION pg_temp.masked(msg text) RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    k record;
BEGIN
    FOR k IN SELECT * FROM pg_temp.kept_ids ORDER BY name LOOP
        msg := regexp_replace(msg,
            '\m(' || CASE k.kind WHEN 'transaction' THEN 'deposit|transaction|Transaction'
                                 WHEN 'method' THEN 'method'
                                 ELSE 'event' END || ') ' || k.id || '\M',
            '\1 ' || k.name, 'g');
    END LOOP;
    RETURN msg;
END $$;

-- pg_temp.fails(stmt) with kept ids written as their names.
CREATE FUNCTION pg_temp.refused(stmt text) RETURNS text LANGUAGE sql AS $$
    SELECT pg_temp.masked(pg_temp.fails(stmt));
$$;

-- The same without the detail, where the detail would repeat itself or show values that
-- change from run to run (a "Failing row contains (...)" with a serial id or now()).
CREATE FUNCTION pg_temp.refused_brief(stmt text) RETURNS text LANGUAGE sql AS $$
    SELECT split_part(pg_temp.refused(stmt), ' | ', 1);
$$;

SET client_min_messages = notice;
