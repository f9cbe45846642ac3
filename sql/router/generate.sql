-- Prints the router's functions, generated from the catalogue of a database where the credits
-- extension is installed (run by sql/router/build.sh with psql -At).  What it routes:
--   * every public function of credits (no leading underscore, EXECUTE granted to
--     credits_reader, credits_app or credits_worker) whose first argument is project_id
--     bigint: same name, arguments, defaults, result, grants and comment, run on the
--     project's partition (a set-returning one whose project_id defaults to null runs on
--     every partition when it is null, like verify());
--   * a function whose first argument is project_ids bigint[]: every array argument split by
--     partition (SPLIT), the counts of the parts added up;
--   * every public view with a project_id column: a function of the view's name taking
--     project_id and returning that project's rows (unless credits has a function of that
--     name, routed as above); credits.fleet_overview() returns
--     balance_overview from every partition;
--   * the roles credits creates, with their memberships and comments, and the enum and
--     composite types of schema credits those signatures use (the money type itself comes
--     from the same source file as in credits).
-- A signature it cannot route stops the build.
\set ON_ERROR_STOP 1
SET search_path = pg_catalog;
SET client_min_messages = warning;

CREATE TEMP TABLE roles (rolname name);
INSERT INTO roles VALUES ('credits_reader'), ('credits_app'), ('credits_worker');

-- Public functions taking the project (or an array of projects) first.
CREATE TEMP VIEW routed AS
SELECT p.oid, p.proname, p.proretset, p.prorettype,
       p.proargtypes[0] = 'int8[]'::regtype AS split,
       format('credits.%I(%s)', p.proname, pg_get_function_identity_arguments(p.oid)) AS ident,
       pg_get_function_arguments(p.oid) AS args,
       pg_get_function_result(p.oid) AS result,
       (SELECT string_agg(quote_ident(r.rolname), ', ' ORDER BY r.rolname)
          FROM aclexplode(p.proacl) a JOIN pg_roles g ON g.oid = a.grantee
          JOIN roles r ON r.rolname = g.rolname
         WHERE a.privilege_type = 'EXECUTE') AS grantees,
       obj_description(p.oid, 'pg_proc') AS comment,
       p.pronargdefaults = p.pronargs AND p.proretset AS all_when_null
  FROM pg_proc p
 WHERE p.pronamespace = 'credits'::regnamespace
   AND p.proname !~ '^_'
   AND p.pronargs >= 1
   AND (p.proargnames[1], p.proargtypes[0]) IN (('project_id', 'int8'::regtype),
                                                 ('project_ids', 'int8[]'::regtype))
   AND EXISTS (SELECT FROM aclexplode(p.proacl) a JOIN pg_roles g ON g.oid = a.grantee
                WHERE g.rolname IN (SELECT rolname FROM roles) AND a.privilege_type = 'EXECUTE');

-- Public views with a project_id column.
CREATE TEMP VIEW routed_views AS
SELECT c.oid, c.relname,
       (SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', '
                          ORDER BY a.attnum)
          FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
       (SELECT string_agg('v.' || quote_ident(a.attname), ', ' ORDER BY a.attnum)
          FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS select_list,
       (SELECT string_agg(quote_ident(r.rolname), ', ' ORDER BY r.rolname)
          FROM aclexplode(c.relacl) a JOIN pg_roles g ON g.oid = a.grantee
          JOIN roles r ON r.rolname = g.rolname
         WHERE a.privilege_type = 'SELECT') AS grantees,
       obj_description(c.oid, 'pg_class') AS comment
  FROM pg_class c
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('v', 'm')
   AND c.relname !~ '^_'
   -- (a function of the view's name, if credits has one, is routed as a function)
   AND NOT EXISTS (SELECT FROM routed r WHERE r.proname = c.relname)
   AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'project_id'
                                           AND a.atttypid = 'int8'::regtype AND NOT a.attisdropped)
   AND EXISTS (SELECT FROM aclexplode(c.relacl) a JOIN pg_roles g ON g.oid = a.grantee
                WHERE g.rolname IN (SELECT rolname FROM roles) AND a.privilege_type = 'SELECT');

-- Refuse what this generator does not know how to route.
DO $$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT * FROM routed WHERE split AND (proretset OR prorettype <> 'int8'::regtype) LOOP
        RAISE EXCEPTION 'cannot route %: a function taking project_ids[] must return a count (bigint)', f.ident;
    END LOOP;
    IF NOT EXISTS (SELECT FROM routed_views WHERE relname = 'balance_overview') THEN
        RAISE EXCEPTION 'credits has no view balance_overview to build fleet_overview() from';
    END IF;
END $$;

-- The types of schema credits that the routed signatures and views use, the money type aside.
CREATE TEMP VIEW used_types AS
WITH RECURSIVE direct(t) AS (
    SELECT unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]) || p.prorettype)
      FROM pg_proc p WHERE p.oid IN (SELECT oid FROM routed)
    UNION
    SELECT a.atttypid FROM pg_attribute a WHERE a.attrelid IN (SELECT oid FROM routed_views) AND a.attnum > 0
), closure(t) AS (
    SELECT CASE WHEN y.typelem <> 0 AND y.typlen = -1 THEN y.typelem ELSE y.oid END
      FROM direct d JOIN pg_type y ON y.oid = d.t
    UNION
    SELECT CASE WHEN y.typelem <> 0 AND y.typlen = -1 THEN y.typelem ELSE y.oid END
      FROM closure c JOIN pg_type ct ON ct.oid = c.t
      JOIN pg_attribute a ON a.attrelid = ct.typrelid AND a.attnum > 0 AND NOT a.attisdropped
      JOIN pg_type y ON y.oid = a.atttypid
)
SELECT y.oid, y.typname, y.typtype, y.typrelid
  FROM closure c JOIN pg_type y ON y.oid = c.t
 WHERE y.typnamespace = 'credits'::regnamespace AND y.oid <> 'credits.credits'::regtype;

DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM used_types WHERE typtype NOT IN ('e', 'c') LOOP
        RAISE EXCEPTION 'cannot route type credits.%: only enums and composite types are rebuilt on the router', t.typname;
    END LOOP;
END $$;

-- The roles, as on the shards: created when missing (they are cluster-wide), their
-- memberships among themselves, their comments, and USAGE on the schema.
SELECT format(E'DO $$BEGIN\n    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = %L) THEN\n'
              '        CREATE ROLE %I NOLOGIN;\n    END IF;\nEND $$;', r.rolname, r.rolname)
       || coalesce(format(E'\nCOMMENT ON ROLE %I IS ', r.rolname)
                   || quote_literal(shobj_description(g.oid, 'pg_authid')) || ';', '')
  FROM roles r JOIN pg_roles g USING (rolname) ORDER BY r.rolname;
SELECT format('GRANT %I TO %I;', g.rolname, m.rolname)
  FROM pg_auth_members am JOIN pg_roles g ON g.oid = am.roleid JOIN pg_roles m ON m.oid = am.member
 WHERE g.rolname IN (SELECT rolname FROM roles) AND m.rolname IN (SELECT rolname FROM roles)
 ORDER BY 1;
SELECT format('GRANT USAGE ON SCHEMA credits TO %s;', string_agg(quote_ident(rolname), ', ' ORDER BY rolname))
  FROM roles;

-- Enums first, then composite types (a composite of composites is created after its parts).
SELECT format('CREATE TYPE credits.%I AS ENUM (%s);', t.typname,
              (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
                 FROM pg_enum e WHERE e.enumtypid = t.oid))
       || coalesce(format(E'\nCOMMENT ON TYPE credits.%I IS ', t.typname)
                   || quote_literal(obj_description(t.oid, 'pg_type')) || ';', '')
  FROM used_types t WHERE t.typtype = 'e' ORDER BY t.typname;

SELECT format('CREATE TYPE credits.%I AS (%s);', t.typname,
              (SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', '
                                 ORDER BY a.attnum)
                 FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped))
       || coalesce(format(E'\nCOMMENT ON TYPE credits.%I IS ', t.typname)
                   || quote_literal(coalesce(obj_description(t.oid, 'pg_type'),
                                             obj_description(t.typrelid, 'pg_class'))) || ';', '')
  FROM used_types t WHERE t.typtype = 'c'
 ORDER BY (SELECT count(*) FROM pg_attribute a JOIN used_types u ON u.oid = a.atttypid
            WHERE a.attrelid = t.typrelid AND u.typtype = 'c'), t.typname;

-- The per-project functions.
SELECT format(E'CREATE FUNCTION %s RETURNS %s LANGUAGE plproxy AS $proxy$\n'
              '    CLUSTER ''credits'';\n    RUN ON %s;\n$proxy$;',
              format('credits.%I(%s)', r.proname, r.args), r.result,
              CASE WHEN r.all_when_null THEN 'credits._partitions_of(project_id)'
                   ELSE 'credits._partition_of(project_id)' END)
  FROM routed r WHERE NOT r.split ORDER BY r.proname, r.ident;

-- The batch functions (project_ids first): each partition's part of the arrays is sent to it
-- (SPLIT), in parallel, and the counts of the parts are added up.  A trailing argument whose
-- default is null is left out of the remote call when it is null (SPLIT cannot divide a null
-- array).  A call that cannot be divided (null or unequal arrays) is sent whole to the
-- partition of its first project, whose shard refuses it with its own SQLSTATE.
CREATE TEMP VIEW split_parts AS
SELECT r.oid, r.proname, r.args, p.pronargs - p.pronargdefaults AS nreq,
       p.pronargdefaults > 0
         AND pg_get_expr(p.proargdefaults, 0) ~ '^NULL::[^,]+(, NULL::[^,]+)*$' AS short_ok,
       string_agg(quote_ident(a.n), ', ' ORDER BY a.i) AS names_all,
       string_agg(quote_ident(a.n), ', ' ORDER BY a.i) FILTER (WHERE a.i <= p.pronargs - p.pronargdefaults) AS names_req,
       string_agg(format('%I %s', a.n, format_type(a.t, NULL)), ', ' ORDER BY a.i) AS sig_all,
       string_agg(format('%I %s', a.n, format_type(a.t, NULL)), ', ' ORDER BY a.i)
         FILTER (WHERE a.i <= p.pronargs - p.pronargdefaults) AS sig_req,
       string_agg(quote_ident(a.n), ', ' ORDER BY a.i) FILTER (WHERE a.is_array) AS arrays_all,
       string_agg(quote_ident(a.n), ', ' ORDER BY a.i)
         FILTER (WHERE a.is_array AND a.i <= p.pronargs - p.pronargdefaults) AS arrays_req,
       string_agg(format('(%1$I IS NOT NULL AND cardinality(%1$I) <> cardinality(project_ids))', a.n), ' OR ' ORDER BY a.i)
         FILTER (WHERE a.is_array AND a.i > 1) AS unequal,
       string_agg(format('%I IS NULL', a.n), ' AND ' ORDER BY a.i)
         FILTER (WHERE a.i > p.pronargs - p.pronargdefaults) AS defaults_null
  FROM routed r JOIN pg_proc p ON p.oid = r.oid,
       LATERAL (SELECT x.n, x.t, x.i, y.typcategory = 'A' AS is_array
                  FROM unnest(p.proargnames[1:p.pronargs], p.proargtypes::oid[]) WITH ORDINALITY AS x(n, t, i)
                  JOIN pg_type y ON y.oid = x.t) a
 WHERE r.split
 GROUP BY r.oid, r.proname, r.args, p.pronargs, p.pronargdefaults, p.proargdefaults;

SELECT format(E'CREATE FUNCTION credits.%1$I(%2$s) RETURNS SETOF bigint LANGUAGE plproxy AS $proxy$\n'
              '    CLUSTER ''credits'';\n    SPLIT %3$s;\n    RUN ON credits._partition_of(project_ids);\n'
              '    TARGET credits.%4$I;\n$proxy$;\n'
              'COMMENT ON FUNCTION credits.%1$I(%2$s) IS %5$L;',
              '_' || s.proname || '_split', v.sig, v.arrays, s.proname,
              format('Each partition''s part of a call of credits.%I, sent to its shard (internal).', s.proname))
  FROM split_parts s,
       LATERAL (VALUES (s.sig_all, s.arrays_all), (s.sig_req, s.arrays_req)) AS v(sig, arrays)
 WHERE v.sig = s.sig_all OR s.short_ok
 ORDER BY s.proname, v.sig;

SELECT format(E'CREATE FUNCTION credits.%1$I(%2$s) RETURNS bigint LANGUAGE plproxy AS $proxy$\n'
              '    CLUSTER ''credits'';\n    RUN ON credits._partition_of(project_ids);\n'
              '    TARGET credits.%3$I;\n$proxy$;\n'
              'COMMENT ON FUNCTION credits.%1$I(%2$s) IS %4$L;',
              '_' || s.proname || '_whole', s.sig_all, s.proname,
              format('A call of credits.%I that cannot be divided, sent whole to the shard of its first project (internal).', s.proname))
  || format(E'\nCREATE FUNCTION credits.%1$I(%2$s) RETURNS bigint LANGUAGE plpgsql AS $body$\n'
            'BEGIN\n'
            '    IF project_ids IS NULL OR %3$s THEN\n'
            '        RETURN credits.%4$I(%5$s);\n'
            '    END IF;\n%6$s'
            '    RETURN (SELECT coalesce(sum(n), 0)::bigint FROM credits.%7$I(%5$s) AS n);\n'
            'END\n$body$;',
            s.proname, s.args, coalesce(s.unequal, 'false'), '_' || s.proname || '_whole', s.names_all,
            CASE WHEN s.short_ok THEN
                format(E'    IF %s THEN\n        RETURN (SELECT coalesce(sum(n), 0)::bigint FROM credits.%I(%s) AS n);\n    END IF;\n',
                       s.defaults_null, '_' || s.proname || '_split', s.names_req)
            ELSE '' END,
            '_' || s.proname || '_split')
  FROM split_parts s ORDER BY s.proname;

-- The batches' helpers: granted as the batch function is (its callers run them).
SELECT format('REVOKE ALL ON FUNCTION credits.%s FROM PUBLIC;', h.sig)
       || coalesce(format(E'\nGRANT EXECUTE ON FUNCTION credits.%s TO %s;', h.sig, r.grantees), '')
  FROM split_parts s JOIN routed r ON r.oid = s.oid,
       LATERAL (VALUES (format('%I(%s)', '_' || s.proname || '_split', s.sig_all)),
                       (format('%I(%s)', '_' || s.proname || '_split', s.sig_req)),
                       (format('%I(%s)', '_' || s.proname || '_whole', s.sig_all))) AS h(sig)
 WHERE h.sig <> format('%I(%s)', '_' || s.proname || '_split', s.sig_req) OR s.short_ok
 ORDER BY h.sig;

-- Grants and comments of the functions, as on the shards.
SELECT format(E'REVOKE ALL ON FUNCTION %s FROM PUBLIC;%s\nCOMMENT ON FUNCTION %s IS %L;',
              r.ident,
              CASE WHEN r.grantees IS NOT NULL THEN format(E'\nGRANT EXECUTE ON FUNCTION %s TO %s;', r.ident, r.grantees) ELSE '' END,
              r.ident,
              coalesce(r.comment || ' ', '') || '(Router: ' ||
              CASE WHEN r.split THEN 'each project''s part runs on its partition''s shard and commits there.)'
                   WHEN r.all_when_null THEN 'runs on the project''s shard, or on every shard when project_id is null.)'
                   ELSE 'runs on the project''s shard.)' END)
  FROM routed r ORDER BY r.proname, r.ident;

-- One project's rows of each view.
SELECT format(E'CREATE FUNCTION credits.%I(project_id bigint) RETURNS TABLE(%s) LANGUAGE plproxy AS $proxy$\n'
              '    CLUSTER ''credits'';\n    RUN ON credits._partition_of(project_id);\n'
              '    SELECT %s FROM credits.%I v WHERE v.project_id = project_id;\n$proxy$;\n'
              'REVOKE ALL ON FUNCTION credits.%I(bigint) FROM PUBLIC;%s\n'
              'COMMENT ON FUNCTION credits.%I(bigint) IS %L;',
              v.relname, v.columns, v.select_list, v.relname, v.relname,
              CASE WHEN v.grantees IS NOT NULL THEN format(E'\nGRANT EXECUTE ON FUNCTION credits.%I(bigint) TO %s;', v.relname, v.grantees) ELSE '' END,
              v.relname,
              format('One project''s rows of the view credits.%I on its shard.', v.relname)
              || coalesce(' The view: ' || v.comment, ''))
  FROM routed_views v ORDER BY v.relname;

-- Every shard's balance_overview rows.
SELECT format(E'CREATE FUNCTION credits.fleet_overview() RETURNS TABLE(%s) LANGUAGE plproxy AS $proxy$\n'
              '    CLUSTER ''credits'';\n    RUN ON ALL;\n'
              '    SELECT %s FROM credits.balance_overview v;\n$proxy$;\n'
              'REVOKE ALL ON FUNCTION credits.fleet_overview() FROM PUBLIC;%s\n'
              'COMMENT ON FUNCTION credits.fleet_overview() IS %L;',
              v.columns, v.select_list,
              CASE WHEN v.grantees IS NOT NULL THEN format(E'\nGRANT EXECUTE ON FUNCTION credits.fleet_overview() TO %s;', v.grantees) ELSE '' END,
              'Every project''s row of credits.balance_overview, read from every shard (not one snapshot: each shard answers for itself).')
  FROM routed_views v WHERE v.relname = 'balance_overview';
