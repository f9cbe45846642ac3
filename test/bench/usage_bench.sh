#!/usr/bin/env bash
# The per-request usage path under load, on one throwaway server (about 2.5 minutes):
#
#   record_usage        SELECT credits.record_usage(1, 'chat-api', '0.0042')  -- ONE project
#   bare_insert         one INSERT of the same row into an unindexed table (the floor)
#   row_and_balance     the naive design: INSERT a usage row AND UPDATE the project's one
#                       balance row, in one transaction
#
# each at 1, 8 and 32 clients, then record_usage with an idempotency key at 32 clients,
# record_usage_batch with 1,000-row batches (100 projects, 3 products, sent as text array
# parameters) at 1 and 2 clients, and as its floor the same 1,000 rows as one
# INSERT ... SELECT FROM unnest(...) into credits.usage_events.  pgbench, SECONDS seconds per run (default 5); three rounds, each
# running everything once in turn, and the best of the three is kept (the machine's disk and
# cores are shared: one round alone is noisy).  About 3.5 minutes.  Prints TPS and ratios.
#
#   test/bench/usage_bench.sh [SECONDS]
#
# Targets: record_usage >= 0.7x bare_insert at 32 clients; record_usage_batch >= 500,000
# rows/s.  The extension must be installed (make install).  Every call commits (synchronous
# commit on, as in production), so at many clients all three are bound by WAL flushes; the
# single balance row is what makes row_and_balance fall behind.
set -euo pipefail
seconds=${1:-5}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib/tmp_server.sh
. "$here/../lib/tmp_server.sh"

tmp_server_start usage_bench
scripts=$(mktemp -d /tmp/credits-usage-bench.XXXXXX)
chmod 755 "$scripts"
# (on exit, pgbench's errors if any, then the server and the scripts removed: a grep that finds
# nothing must not stop the trap under set -e)
trap 'grep -iE "error|abort|fatal" "$scripts/pgbench.log" 2>/dev/null | head -5 || true; tmp_server_stop; rm -rf "$scripts"' EXIT

psql >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT credits.open_account(p) FROM generate_series(1, 100) AS p;
SELECT credits.add_payment_method(p, 'pm_' || p) FROM generate_series(1, 100) AS p;
SELECT credits.complete_deposit(p, credits.add_credits(p, '1000000.00')) FROM generate_series(1, 100) AS p;
-- the floor: the same row, no index, no checks
CREATE TABLE bare_usage (project_id bigint, resource_id text, usage_hour timestamptz, amount credits.credits);
-- the naive design: a usage row plus one balance row per project, updated by every call
CREATE TABLE naive_usage (project_id bigint, resource_id text, usage_hour timestamptz, amount credits.credits);
CREATE TABLE naive_balance (project_id bigint PRIMARY KEY, balance credits.credits NOT NULL);
INSERT INTO naive_balance VALUES (1, '1000000.00');
SQL

cat > "$scripts/record_usage.sql" <<'SQL'
SELECT credits.record_usage(1, 'chat-api', '0.0042');
SQL
cat > "$scripts/bare_insert.sql" <<'SQL'
INSERT INTO bare_usage VALUES (1, 'chat-api', date_trunc('hour', now(), 'UTC'), '0.0042');
SQL
cat > "$scripts/row_and_balance.sql" <<'SQL'
BEGIN;
INSERT INTO naive_usage VALUES (1, 'chat-api', date_trunc('hour', now(), 'UTC'), '0.0042');
UPDATE naive_balance SET balance = balance - '0.0042'::credits.credits WHERE project_id = 1;
COMMIT;
SQL
cat > "$scripts/record_usage_key.sql" <<'SQL'
\set r random(1, 2000000000)
SELECT credits.record_usage(1, 'chat-api', '0.0042', 'req-' || :client_id || '-' || :r);
SQL
# The batch's three arrays: 1,000 calls over 100 projects and 3 products, sent by pgbench as
# text parameters on every call (-D), as an application would send them.
batch_args=(-D "p={$(seq 1 1000 | awk '{printf "%s%d", (NR>1?",":""), $1%100+1}')}"
            -D "r={$(seq 1 1000 | awk '{printf "%sapi-%d", (NR>1?",":""), $1%3}')}"
            -D "a={$(seq 1 1000 | awk '{printf "%s0.%04d", (NR>1?",":""), $1%50+1}')}")
cat > "$scripts/insert_batch_floor.sql" <<'SQL'
INSERT INTO credits.usage_events
SELECT u.p, u.r, date_trunc('hour', now(), 'UTC'), u.a
  FROM unnest(:p::bigint[], :r::text[], :a::credits.credits[]) AS u(p, r, a);
SQL
cat > "$scripts/record_usage_batch.sql" <<'SQL'
SELECT credits.record_usage_batch(:p::bigint[], :r::text[], :a::credits.credits[]);
SQL

# pgbench SCRIPT CLIENTS -> TPS (excluding connection time)
bench() {
  local threads=$(( $2 < 2 ? $2 : 2 ))
  local args=()
  case $1 in *batch*) args=("${batch_args[@]}") ;; esac
  as_pg "$PGBIN/pgbench" -n -M prepared -T "$seconds" -c "$2" -j "$threads" "${args[@]}" -f "$scripts/$1.sql" 2>&1 |
    tee -a "$scripts/pgbench.log" | awk '/^tps = / {printf "%.0f\n", $3; found=1} END {if (!found) exit 1}'
}

runs=(record_usage:1 bare_insert:1 row_and_balance:1 record_usage:8 bare_insert:8 row_and_balance:8
      record_usage:32 bare_insert:32 row_and_balance:32 record_usage_key:32
      record_usage_batch:1 record_usage_batch:2 insert_batch_floor:1 insert_batch_floor:2)
declare -A best
for round in 1 2 3; do
  line="round $round:"
  for r in "${runs[@]}"; do
    t=$(bench "${r%%:*}" "${r##*:}")
    line+=" $r=$t"
    [ "${best[$r]:-0}" -ge "$t" ] || best[$r]=$t
  done
  echo "$line"
done
ratio() { echo "scale=2; $1 / $2" | bc -l | sed 's/^\./0./'; }

printf '\n%s, %d cores, %s s per run, best of 3 rounds, synchronous_commit %s\n' \
  "$(psql -At -c 'SHOW server_version')" "$(nproc)" "$seconds" "$(psql -At -c 'SHOW synchronous_commit')"
printf '%-8s %13s %12s %16s %18s %21s\n' clients record_usage bare_insert row_and_balance record_usage/bare row_and_balance/bare
for c in 1 8 32; do
  printf '%-8s %13s %12s %16s %18s %21s\n' "$c" "${best[record_usage:$c]}" "${best[bare_insert:$c]}" \
    "${best[row_and_balance:$c]}" "$(ratio "${best[record_usage:$c]}" "${best[bare_insert:$c]}")" \
    "$(ratio "${best[row_and_balance:$c]}" "${best[bare_insert:$c]}")"
done
printf 'record_usage with an idempotency key, 32 clients: %s tps (%s x bare_insert)\n' \
  "${best[record_usage_key:32]}" "$(ratio "${best[record_usage_key:32]}" "${best[bare_insert:32]}")"
for c in 1 2; do
  printf 'record_usage_batch, 1,000-row batches, %d client(s): %s rows/s   (floor, the same rows as one INSERT ... SELECT FROM unnest: %s rows/s)\n' \
    "$c" "$(( best[record_usage_batch:$c] * 1000 ))" "$(( best[insert_batch_floor:$c] * 1000 ))"
done
printf 'targets: record_usage/bare_insert at 32 clients >= 0.70: %s; record_usage_batch >= 500000 rows/s: %s\n' \
  "$(ratio "${best[record_usage:32]}" "${best[bare_insert:32]}")" \
  "$(( (best[record_usage_batch:1] > best[record_usage_batch:2] ? best[record_usage_batch:1] : best[record_usage_batch:2]) * 1000 ))"
