-- ---------------------------------------------------------------------------------------------
-- credits_router: the routing helpers.  The roles and functions that follow this file in the
-- script are generated from the catalogue of credits (sql/router/generate.sql).  The cluster
-- is the SQL/MED server "credits" (FOREIGN DATA WRAPPER plproxy, options p0 .. pN-1, N a power
-- of two) with a user mapping: it is configuration, not part of the extension.
-- ---------------------------------------------------------------------------------------------

-- The hash that names a project's partition (partition = hash & (N - 1)).  A null project
-- goes to partition 0, whose shard refuses it with the same SQLSTATE as a single server.
CREATE FUNCTION credits._partition_of(project_id bigint) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN pg_catalog.hashint8(coalesce(project_id, 0));
COMMENT ON FUNCTION credits._partition_of(bigint) IS
    'the hash that routes a project: its partition is hashint8(project_id) & (partitions - 1)';

-- The partitions a call runs on: the project's, or every partition of cluster "credits" when
-- the project is null (verify() of the whole fleet).
CREATE FUNCTION credits._partitions_of(project_id bigint) RETURNS SETOF integer
    LANGUAGE sql STABLE
    BEGIN ATOMIC
        SELECT credits._partition_of(project_id) WHERE project_id IS NOT NULL
        UNION ALL
        SELECT pg_catalog.generate_series(0, count(*)::integer - 1)
          FROM pg_catalog.pg_foreign_server s, pg_catalog.unnest(s.srvoptions) AS o(opt)
         WHERE project_id IS NULL AND s.srvname = 'credits' AND o.opt ~ '^p[0-9]+=';
    END;
COMMENT ON FUNCTION credits._partitions_of(bigint) IS
    'the partitions a call about project_id runs on: its own, or all of cluster credits when it is null';

-- The partition of a call that cannot be divided by partition: its first project's.
CREATE FUNCTION credits._partition_of(project_ids bigint[]) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN credits._partition_of(project_ids[1]);
COMMENT ON FUNCTION credits._partition_of(bigint[]) IS
    'the hash that routes a batch that cannot be divided: its first project''s';
