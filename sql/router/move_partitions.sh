#!/usr/bin/env bash
# Moves partitions of the router's cluster "credits" to a new, empty shard, online:
#
#   sql/router/move_partitions.sh ROUTER_CONNSTR NEW_SHARD_CONNSTR PARTITION...
#
#   ROUTER_CONNSTR     libpq connection string of the router's database (a superuser)
#   NEW_SHARD_CONNSTR  how the router (and the new shard's subscription) reaches the new shard,
#                      as it will be written into the server's options; its credits is
#                      installed and holds no account yet
#   PARTITION...       partition numbers, all on the same (old) shard
#
# Each connection is made as a superuser (PSQL names psql, default: psql on PATH).  The old
# shard needs wal_level = logical.  The steps, each printed:
#   1. on the old shard, every table of schema credits is published with a row filter
#      hashint8(project_id) & (P - 1) IN (partitions) (REPLICA IDENTITY FULL for the move, so
#      that updates and deletes of any table can be filtered and sent); a table without
#      project_id stops the script before anything is changed;
#   2. the new shard subscribes (initial copy, then streaming), its periodic runs held;
#   3. the old shard's periodic runs are held; the write freeze: the router sends the
#      partitions to the old shard read-only (reads go on, writes fail with 25006 and can be
#      retried), in-flight calls finish, a marker row committed after them reaches the new shard, the new
#      shard's sequences are set past the old shard's, and the router's map switches to the new
#      shard.  The script prints how long writes were frozen;
#   4. the subscription and publication are dropped, the replica identities restored, and the
#      old copies deleted in the old shard's held session with session_replication_role =
#      replica: the owner's maintenance path (a superuser's setting for that session only)
#      past the guards that refuse deleting completed transactions to everyone else.
set -euo pipefail
router=$1 new=$2; shift 2
parts=("$@")
[ ${#parts[@]} -gt 0 ] || { echo "usage: $0 ROUTER_CONNSTR NEW_SHARD_CONNSTR PARTITION..." >&2; exit 2; }
PSQL=${PSQL:-psql}
q() { local c=$1; shift; "$PSQL" -X -q -At -v ON_ERROR_STOP=1 -d "$c" "$@"; }
say() { echo "move: $*"; }
now_ms() { date +%s%3N; }
part_list=$(IFS=,; echo "${parts[*]}")

# The cluster: partition count and each moved partition's shard.
nparts=$(q "$router" -c "SELECT count(*) FROM pg_foreign_server s, unnest(s.srvoptions) o
                          WHERE s.srvname = 'credits' AND o ~ '^p[0-9]+='")
old=
for k in "${parts[@]}"; do
  [ "$k" -ge 0 ] && [ "$k" -lt "$nparts" ] || { echo "move: no partition $k (of $nparts)" >&2; exit 1; }
  c=$(q "$router" -c "SELECT substr(o, length('p$k=') + 1) FROM pg_foreign_server s, unnest(s.srvoptions) o
                       WHERE s.srvname = 'credits' AND o LIKE 'p$k=%'")
  [ -z "$old" ] || [ "$c" = "$old" ] || { echo "move: partitions $part_list are not on one shard" >&2; exit 1; }
  old=$c
done
[ "$old" != "$new" ] || { echo "move: the partitions are already on that shard" >&2; exit 1; }
filter="(pg_catalog.hashint8(project_id) & $((nparts - 1))) IN ($part_list)"
say "partitions $part_list of $nparts: '$old' -> '$new'"

# Preconditions: the new shard is empty, every table can be filtered by project.
[ "$(q "$new" -c 'SELECT count(*) FROM credits.accounts')" = 0 ] ||
  { echo "move: the new shard already holds accounts: move to an empty shard" >&2; exit 1; }
tables=$(q "$old" -c "SELECT string_agg(format('%I.%I', n.nspname, c.relname), ' ' ORDER BY c.relname)
                        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE n.nspname = 'credits' AND c.relkind IN ('r', 'p') AND NOT c.relispartition")
for t in $tables; do
  [ "$(q "$old" -c "SELECT count(*) FROM pg_attribute WHERE attrelid = '$t'::regclass AND attname = 'project_id' AND NOT attisdropped")" = 1 ] ||
    { echo "move: table $t has no project_id: this script cannot divide it" >&2; exit 1; }
done
identities=$(q "$old" -c "SELECT string_agg(format('%s=%s', c.oid::regclass, c.relreplident), ' ')
                            FROM pg_class c WHERE c.oid = ANY ('{${tables// /,}}'::regclass[])")

work=$(mktemp -d /tmp/credits-move.XXXXXX)
held_old= held_new=
cleanup() {
  [ -n "$held_new" ] && { exec 8>&-; wait "$held_new" 2>/dev/null || true; }
  [ -n "$held_old" ] && { exec 9>&-; wait "$held_old" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT
# hold NAME CONNSTR FD PIDVAR: a session that holds the periodic-run lock until told otherwise
# (its commands are written to descriptor FD, its output goes to $work/NAME.out).
hold() {
  mkfifo "$work/$1.in"
  # (with no copy of the other held session's descriptor, so that each ends at its own EOF)
  "$PSQL" -X -q -At -v ON_ERROR_STOP=1 -d "$2" < "$work/$1.in" > "$work/$1.out" 2>&1 8>&- 9>&- &
  printf -v "$4" '%s' $!
  eval "exec $3>\"$work/$1.in\""
  echo "BEGIN; SELECT credits._lock_periodic_runs(); \\echo held" >&"$3"
  wait_for "$1" held
}
# wait_for NAME WORD: until the held session NAME printed WORD.
wait_for() {
  local pid=$held_new; [ "$1" = old ] && pid=$held_old
  until grep -q "^$2\$" "$work/$1.out"; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/$1.out" >&2; exit 1; }
    sleep 0.01
  done
}
# no_xact_before CONNSTR MS: until no other client session there has a transaction begun
# before MS (milliseconds since the epoch).
no_xact_before() {
  until [ "$(q "$1" -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'
                          AND xact_start < to_timestamp($2 / 1000.0) AND pid <> pg_backend_pid()
                          AND query NOT LIKE '%_lock_periodic_runs%'")" = 0 ]; do
    sleep 0.01
  done
}
# set_partitions CONNSTR: the router sends the moved partitions to CONNSTR.
set_partitions() {
  local lit="'${1//\'/\'\'}'" sets=
  for k in "${parts[@]}"; do sets+="${sets:+, }SET p$k $lit"; done
  q "$router" -c "ALTER SERVER credits OPTIONS ($sets)"
}

# 1. Publication, with a marker table of its own for step 3.
marker="CREATE TABLE IF NOT EXISTS public.credits_move_marker (id int PRIMARY KEY, token text NOT NULL)"
q "$old" -c "$marker"; q "$new" -c "$marker"
pub_tables=$(for t in $tables; do printf '%s WHERE (%s), ' "$t" "$filter"; done)
q "$old" <<SQL
$(for t in $tables; do echo "ALTER TABLE $t REPLICA IDENTITY FULL;"; done)
CREATE PUBLICATION credits_move FOR TABLE ${pub_tables} public.credits_move_marker
  WITH (publish = 'insert, update, delete');
SQL
say "published $(echo $tables | wc -w) tables"

# 2. Subscription: the initial copy, then streaming.  The new shard's periodic runs wait.
hold new "$new" 8 held_new
q "$new" -c "CREATE SUBSCRIPTION credits_move CONNECTION '${old//\'/\'\'}' PUBLICATION credits_move"
until [ "$(q "$new" -c "SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
                         WHERE s.subname = 'credits_move' AND r.srsubstate NOT IN ('r', 's')")" = 0 ]; do
  sleep 0.05
done
say "initial copy done: $(q "$new" -c 'SELECT count(*) FROM credits.accounts') accounts"

# 3. The write freeze.  (Router clients run in autocommit, as through PgBouncer: a router
# session sees the new map at its next transaction.)
hold old "$old" 9 held_old               # (a periodic run there finishes first)
frozen_at=$(now_ms)
set_partitions "$old options='-c default_transaction_read_only=on'"
altered_at=$(now_ms)
no_xact_before "$router" "$altered_at"   # router calls that may still use the old map
no_xact_before "$old" "$altered_at"      # and anything else writing on the old shard
token=$frozen_at-$$
q "$old" -c "INSERT INTO public.credits_move_marker VALUES (1, '$token')
             ON CONFLICT (id) DO UPDATE SET token = excluded.token"
until [ "$(q "$new" -c "SELECT count(*) FROM public.credits_move_marker WHERE token = '$token'")" = 1 ]; do
  sleep 0.01
done
q "$old" -c "SELECT format('SELECT setval(%L, %s);', c.oid::regclass, s.last_value + 1000000000000)
               FROM pg_class c, LATERAL (SELECT last_value FROM pg_sequences
                                          WHERE schemaname = 'credits' AND sequencename = c.relname) s
              WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind = 'S' AND s.last_value IS NOT NULL" |
  q "$new" >/dev/null
set_partitions "$new"
thawed_at=$(now_ms)
echo "COMMIT; \\echo released" >&8; wait_for new released
say "write freeze: $((thawed_at - frozen_at)) ms"

# 4. Clean up; the old copies go, in the old shard's held session.
q "$new" -c "DROP SUBSCRIPTION credits_move"
q "$old" -c "DROP PUBLICATION credits_move"
q "$new" -c "DROP TABLE public.credits_move_marker"
q "$old" -c "DROP TABLE public.credits_move_marker"
for ti in $identities; do
  case ${ti#*=} in d) id=DEFAULT ;; f) id=FULL ;; n) id=NOTHING ;; *) id= ;; esac
  [ -z "$id" ] || q "$old" -c "ALTER TABLE ${ti%=*} REPLICA IDENTITY $id"
done
{
  echo "SET LOCAL session_replication_role = replica;"
  for t in $tables; do echo "DELETE FROM $t WHERE $filter;"; done
  echo "COMMIT; \\echo deleted"
} >&9
wait_for old deleted
say "old copies deleted from '$old'"
