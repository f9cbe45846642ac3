#!/usr/bin/env bash
# Why usage_events' index on project_id has deduplication off: record_usage on ONE project
# at CLIENTS clients (default 32), SECONDS seconds a run (default 5), with the index as
# installed (deduplicate_items = off) and rebuilt with deduplication on (PostgreSQL's
# default), ROUNDS rounds alternating (default 3), and a bare INSERT beside each as the floor.
# Every call's key is the same project, so with deduplication every filled leaf page is
# first merged into posting lists, and the calls pay for it.  About 1 minute.
#
#   test/bench/usage_index_bench.sh [CLIENTS] [SECONDS] [ROUNDS]
set -euo pipefail
clients=${1:-32}
seconds=${2:-5}
rounds=${3:-3}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib/tmp_server.sh
. "$here/../lib/tmp_server.sh"

tmp_server_start usage_index_bench
scripts=$(mktemp -d /tmp/credits-usage-index-bench.XXXXXX)
chmod 755 "$scripts"
trap 'tmp_server_stop; rm -rf "$scripts"' EXIT

psql >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT credits.open_account(1);
CREATE TABLE bare_usage (project_id bigint, resource_id text, usage_hour timestamptz, amount credits.credits);
SQL
echo "SELECT credits.record_usage(1, 'chat-api', '0.0042');" > "$scripts/record_usage.sql"
echo "INSERT INTO bare_usage VALUES (1, 'chat-api', date_trunc('hour', now(), 'UTC'), '0.0042');" > "$scripts/bare_insert.sql"
chmod 644 "$scripts"/*.sql

tps() { as_pg "$PGBIN/pgbench" -n -T "$seconds" -c "$clients" -j "$clients" -f "$scripts/$1.sql" 2>&1 | awk '/^tps/ {print int($3)}'; }
# the index rebuilt with deduplication on (on) or off (off), on empty tables
index() {
  psql -c 'DROP INDEX credits.usage_events_project' -c 'TRUNCATE credits.usage_events, bare_usage' \
       -c "CREATE INDEX usage_events_project ON credits.usage_events (project_id) WITH (deduplicate_items = $1)" \
       -c CHECKPOINT >/dev/null
}

printf '%s, %d cores, %d clients, %d s a run\n' "$(psql -At -c 'SHOW server_version')" "$(nproc)" "$clients" "$seconds"
printf 'round  dedup  record_usage  bare_insert  ratio\n'
for r in $(seq "$rounds"); do
  for dedup in off on; do
    index "$dedup"
    ru=$(tps record_usage); bare=$(tps bare_insert)
    printf '%5d  %5s  %12d  %11d  %5.2f\n' "$r" "$dedup" "$ru" "$bare" "$(echo "$ru / $bare" | bc -l)"
  done
done
