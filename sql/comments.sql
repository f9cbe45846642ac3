-- Every public object describes itself: \df+ credits.*, \dv+ credits.*, \dT+ credits.* and
-- pg_settings show a description for each function, aggregate, view, type, role and setting
-- (internal objects start with an underscore).  The lists below must stay empty.
\set ECHO none
\ir test/sql/helpers.sql
\set ECHO all

SELECT credits.now() IS NOT NULL AS library_loaded;   -- the settings are defined by the library

-- functions and aggregates without a comment
SELECT p.oid::regprocedure AS function_without_comment
  FROM pg_proc p
 WHERE p.pronamespace = 'credits'::regnamespace AND p.proname NOT LIKE '\_%'
   AND obj_description(p.oid, 'pg_proc') IS NULL
 ORDER BY 1::text;

-- views, types and roles without a comment
SELECT c.oid::regclass AS view_without_comment
  FROM pg_class c
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind = 'v' AND c.relname NOT LIKE '\_%'
   AND obj_description(c.oid, 'pg_class') IS NULL;
SELECT t.oid::regtype AS type_without_comment
  FROM pg_type t
 WHERE t.typnamespace = 'credits'::regnamespace AND t.typtype IN ('b', 'e', 'd', 'r')
   AND t.typname NOT LIKE '\_%' AND obj_description(t.oid, 'pg_type') IS NULL;
SELECT r.rolname AS role_without_comment
  FROM pg_roles r
 WHERE r.rolname LIKE 'credits\_%' AND shobj_description(r.oid, 'pg_authid') IS NULL;
SELECT name AS setting_without_description
  FROM pg_settings WHERE name LIKE 'credits.%' AND coalesce(short_desc, '') = '';
