-- Every object of the extension credits, one line each, described by what a user of the
-- database can observe: definitions, ACLs, comments, column order, enum labels, operator and
-- opclass members, casts, config-dump registrations, and the roles it creates.  Lines carry no
-- OIDs, so two databases (an upgraded one and a fresh install) can be compared line by line.
-- Used by test/t/090_upgrade.pl:  psql -AtX -f test/sql/extension_objects.sql
WITH ext AS (
    SELECT oid, extconfig FROM pg_catalog.pg_extension WHERE extname = 'credits'
), member AS (
    SELECT d.classid, d.objid
      FROM pg_catalog.pg_depend d, ext
     WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.refobjid = ext.oid
       AND d.deptype = 'e'
), named AS (
    SELECT m.classid, m.objid, i.type, i.identity
      FROM member m, LATERAL pg_catalog.pg_identify_object(m.classid, m.objid, 0) i
), described AS (
    -- every member: its kind, name and comment
    SELECT n.type || ' ' || n.identity || ' comment=' ||
           coalesce(pg_catalog.obj_description(n.objid, c.relname), '<none>') AS line
      FROM named n JOIN pg_catalog.pg_class c ON c.oid = n.classid
    UNION ALL
    -- functions and procedures: the whole definition and the ACL
    SELECT 'function ' || p.oid::regprocedure || E'\n' || pg_catalog.pg_get_functiondef(p.oid) ||
           E'\nacl=' || coalesce(p.proacl::text, '<default>')
      FROM named n JOIN pg_catalog.pg_proc p ON p.oid = n.objid
     WHERE n.classid = 'pg_catalog.pg_proc'::regclass AND p.prokind <> 'a'
    UNION ALL
    -- aggregates
    SELECT format('aggregate %s trans=%s/%s final=%s combine=%s serial=%s/%s minv=%s/%s/%s '
                  'init=%s sortop=%s kind=%s parallel=%s acl=%s',
                  p.oid::regprocedure, a.aggtransfn, a.aggtranstype::regtype, a.aggfinalfn,
                  a.aggcombinefn, a.aggserialfn, a.aggdeserialfn, a.aggmtransfn, a.aggminvtransfn,
                  a.aggmfinalfn, a.agginitval, a.aggsortop::regoperator, a.aggkind, p.proparallel,
                  coalesce(p.proacl::text, '<default>'))
      FROM named n JOIN pg_catalog.pg_proc p ON p.oid = n.objid
      JOIN pg_catalog.pg_aggregate a ON a.aggfnoid = p.oid
     WHERE n.classid = 'pg_catalog.pg_proc'::regclass
    UNION ALL
    -- relations: kind, options, ACL; views their query; sequences their parameters
    SELECT format('relation %s kind=%s persistence=%s options=%s acl=%s config_dump=%s%s',
                  c.oid::regclass, c.relkind, c.relpersistence, c.reloptions,
                  coalesce(c.relacl::text, '<default>'),
                  c.oid = ANY ((SELECT extconfig FROM ext)::oid[]),
                  CASE c.relkind WHEN 'v' THEN E'\n' || pg_catalog.pg_get_viewdef(c.oid)
                                 WHEN 'S' THEN (SELECT format(' seq=%s,%s,%s,%s,%s,%s', s.seqtypid::regtype,
                                                    s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcycle)
                                                  FROM pg_catalog.pg_sequence s WHERE s.seqrelid = c.oid)
                                 ELSE '' END)
      FROM named n JOIN pg_catalog.pg_class c ON c.oid = n.objid
     WHERE n.classid = 'pg_catalog.pg_class'::regclass
    UNION ALL
    -- columns, in order (ALTER TABLE ADD COLUMN appends: a fresh install must list new
    -- columns last too, so that SELECT * and COPY without a column list agree)
    SELECT format('column %s #%s %s %s notnull=%s default=%s collation=%s acl=%s comment=%s',
                  c.oid::regclass,
                  row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                  a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), a.attcollation::regcollation,
                  coalesce(a.attacl::text, '<default>'),
                  coalesce(pg_catalog.col_description(c.oid, a.attnum), '<none>'))
      FROM named n JOIN pg_catalog.pg_class c ON c.oid = n.objid
      JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
     WHERE n.classid = 'pg_catalog.pg_class'::regclass
    UNION ALL
    -- constraints of tables and domains
    SELECT format('constraint %s on %s%s: %s deferrable=%s comment=%s', co.conname,
                  co.conrelid::regclass, co.contypid::regtype, pg_catalog.pg_get_constraintdef(co.oid),
                  co.condeferrable,
                  coalesce(pg_catalog.obj_description(co.oid, 'pg_constraint'), '<none>'))
      FROM named n JOIN pg_catalog.pg_constraint co
        ON (n.classid = 'pg_catalog.pg_class'::regclass AND co.conrelid = n.objid)
        OR (n.classid = 'pg_catalog.pg_type'::regclass AND co.contypid = n.objid)
    UNION ALL
    -- indexes
    SELECT 'index ' || pg_catalog.pg_get_indexdef(i.indexrelid) || ' options=' ||
           coalesce(ic.reloptions::text, '') || ' comment=' ||
           coalesce(pg_catalog.obj_description(i.indexrelid, 'pg_class'), '<none>')
      FROM named n JOIN pg_catalog.pg_index i ON i.indrelid = n.objid
      JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
     WHERE n.classid = 'pg_catalog.pg_class'::regclass
    UNION ALL
    -- triggers
    SELECT 'trigger ' || pg_catalog.pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text ||
           ' comment=' || coalesce(pg_catalog.obj_description(t.oid, 'pg_trigger'), '<none>')
      FROM named n JOIN pg_catalog.pg_trigger t ON t.tgrelid = n.objid AND NOT t.tgisinternal
     WHERE n.classid = 'pg_catalog.pg_class'::regclass
    UNION ALL
    -- types: their shape, enum labels in order, ACL
    SELECT format('type %s type=%s len=%s byval=%s align=%s storage=%s category=%s preferred=%s '
                  'in=%s out=%s recv=%s send=%s analyze=%s acl=%s labels=%s',
                  t.oid::regtype, t.typtype, t.typlen, t.typbyval, t.typalign, t.typstorage,
                  t.typcategory, t.typispreferred, t.typinput, t.typoutput, t.typreceive, t.typsend,
                  t.typanalyze, coalesce(t.typacl::text, '<default>'),
                  (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                     FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid))
      FROM named n JOIN pg_catalog.pg_type t ON t.oid = n.objid
     WHERE n.classid = 'pg_catalog.pg_type'::regclass
    UNION ALL
    -- operators
    SELECT format('operator %s result=%s code=%s commutator=%s negator=%s restrict=%s join=%s '
                  'merges=%s hashes=%s', o.oid::regoperator, o.oprresult::regtype, o.oprcode,
                  o.oprcom::regoperator, o.oprnegate::regoperator, o.oprrest, o.oprjoin,
                  o.oprcanmerge, o.oprcanhash)
      FROM named n JOIN pg_catalog.pg_operator o ON o.oid = n.objid
     WHERE n.classid = 'pg_catalog.pg_operator'::regclass
    UNION ALL
    -- operator classes and the members of their families
    SELECT format('opclass %s family=%s type=%s default=%s', n.identity,
                  (SELECT i.identity FROM pg_catalog.pg_identify_object('pg_catalog.pg_opfamily'::regclass,
                                                                        oc.opcfamily, 0) i),
                  oc.opcintype::regtype, oc.opcdefault)
      FROM named n JOIN pg_catalog.pg_opclass oc ON oc.oid = n.objid
     WHERE n.classid = 'pg_catalog.pg_opclass'::regclass
    UNION ALL
    SELECT format('opfamily %s operator %s %s(%s,%s) purpose=%s sortfamily=%s', n.identity,
                  ao.amopstrategy, ao.amopopr::regoperator, ao.amoplefttype::regtype,
                  ao.amoprighttype::regtype, ao.amoppurpose, ao.amopsortfamily)
      FROM named n JOIN pg_catalog.pg_amop ao ON ao.amopfamily = n.objid
     WHERE n.classid = 'pg_catalog.pg_opfamily'::regclass
    UNION ALL
    SELECT format('opfamily %s function %s(%s,%s) %s', n.identity, ap.amprocnum,
                  ap.amproclefttype::regtype, ap.amprocrighttype::regtype, ap.amproc::regprocedure)
      FROM named n JOIN pg_catalog.pg_amproc ap ON ap.amprocfamily = n.objid
     WHERE n.classid = 'pg_catalog.pg_opfamily'::regclass
    UNION ALL
    -- casts
    SELECT format('cast %s -> %s function=%s context=%s method=%s', ca.castsource::regtype,
                  ca.casttarget::regtype, ca.castfunc::regprocedure, ca.castcontext, ca.castmethod)
      FROM named n JOIN pg_catalog.pg_cast ca ON ca.oid = n.objid
     WHERE n.classid = 'pg_catalog.pg_cast'::regclass
    UNION ALL
    -- the schema
    SELECT format('schema %s acl=%s comment=%s', ns.nspname, ns.nspacl,
                  coalesce(pg_catalog.obj_description(ns.oid, 'pg_namespace'), '<none>'))
      FROM pg_catalog.pg_namespace ns WHERE ns.nspname = 'credits'
    UNION ALL
    -- the roles the extension creates (cluster-wide): attributes, memberships, comments
    SELECT format('role %s login=%s inherit=%s member_of=%s comment=%s', r.rolname, r.rolcanlogin,
                  r.rolinherit,
                  (SELECT string_agg(g.rolname, ',' ORDER BY g.rolname)
                     FROM pg_catalog.pg_auth_members am JOIN pg_catalog.pg_roles g ON g.oid = am.roleid
                    WHERE am.member = r.oid),
                  coalesce(pg_catalog.shobj_description(r.oid, 'pg_authid'), '<none>'))
      FROM pg_catalog.pg_roles r WHERE r.rolname LIKE 'credits\_%'
)
SELECT line FROM described ORDER BY line COLLATE "C";
