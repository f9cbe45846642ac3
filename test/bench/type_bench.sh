#!/usr/bin/env bash
# Benchmark of the credits type against bigint and numeric(20,6) on one throwaway server:
# sum(x), avg(x) and sum(x * 3 / 7) over ROWS rows (default 10 million) of each type,
# best of 3 runs (interleaved across the types), with parallel workers off and on. Prints
# the times and the ratios.
#
#   test/bench/type_bench.sh [ROWS]
#
# Targets: sum(credits) within 1.15x of sum(bigint); sum(x * 3 / 7) at least 2x faster
# over credits than over numeric. The extension must be installed (make install).
# Note: x * 3 / 7 is integer division for bigint (truncating), half-even for credits,
# and numeric division for numeric; the bigint column is a reference, not the same result.
set -euo pipefail
rows=${1:-10000000}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib/tmp_server.sh
. "$here/../lib/tmp_server.sh"

tmp_server_start credits_bench

echo "loading $rows rows into t_credits, t_bigint and t_numeric ..."
psql <<SQL
SET search_path = public, credits;
-- the same amounts in each table: up to 1000 credits, in micro-credits
CREATE UNLOGGED TABLE t_bigint AS
  SELECT (i * 7919 % 1000000000)::bigint - 500000000 AS x FROM generate_series(1::bigint, $rows) AS i;
CREATE UNLOGGED TABLE t_credits AS SELECT x * '0.000001'::credits AS x FROM t_bigint;
CREATE UNLOGGED TABLE t_numeric AS SELECT (x / 1000000.0)::numeric(20,6) AS x FROM t_bigint;
VACUUM FREEZE ANALYZE t_bigint, t_credits, t_numeric;
SQL

# the three types must agree before their times mean anything
psql -At <<'SQL'
SET search_path = public, credits;
SET max_parallel_workers_per_gather = 0;
SELECT 'same sums: ' || ((SELECT sum(x)::numeric FROM t_credits) = (SELECT sum(x) FROM t_numeric)
       AND (SELECT sum(x)::numeric FROM t_credits) * 1000000 = (SELECT sum(x) FROM t_bigint));
SQL

queries=("sum(x)" "avg(x)" "sum(x * 3 / 7)")
types=(credits bigint numeric)

# the plan with workers on
psql -At <<'SQL' | sed 's/^ *//; s/ *(cost.*//; s/^/  /'
SET search_path = public, credits;
SET max_parallel_workers_per_gather = 2;
EXPLAIN SELECT sum(x) FROM t_credits;
SQL

printf '\n%d rows, best of 3, jit off, %s\n' "$rows" "$(psql -At -c 'SHOW server_version')"
printf '%-8s %-16s %12s %12s %12s %16s %17s\n' workers query credits_ms bigint_ms numeric_ms credits/bigint numeric/credits
for workers in 0 2; do
  # One session per setting; 3 rounds, each running every query over every type once, so
  # that a change in machine load hits all types alike. Keep the best time of each.
  script="SET search_path = public, credits;
SET max_parallel_workers_per_gather = $workers;
SET jit = off;
\\o /dev/null
SELECT count(*) FROM t_credits; SELECT count(*) FROM t_bigint; SELECT count(*) FROM t_numeric;
\\timing on"
  order=()
  for round in 1 2 3; do
    for qi in "${!queries[@]}"; do
      for t in "${types[@]}"; do
        script+=$'\n'"SELECT ${queries[$qi]} FROM t_$t;"
        order+=("$qi:$t")
      done
    done
  done
  mapfile -t times < <(psql <<<"$script" | awk '/^Time:/ { print $2 }')
  [ "${#times[@]}" = "${#order[@]}" ] || { echo "expected ${#order[@]} timings, got ${#times[@]}" >&2; exit 1; }
  declare -A best=()
  for i in "${!order[@]}"; do
    k=${order[$i]}
    if [ -z "${best[$k]:-}" ] || awk -v a="${times[$i]}" -v b="${best[$k]}" 'BEGIN { exit !(a < b) }'; then
      best[$k]=${times[$i]}
    fi
  done
  for qi in "${!queries[@]}"; do
    c=${best[$qi:credits]} b=${best[$qi:bigint]} n=${best[$qi:numeric]}
    printf '%-8s %-16s %12.1f %12.1f %12.1f %16s %17s\n' "$workers" "${queries[$qi]}" "$c" "$b" "$n" \
      "$(awk -v a="$c" -v b="$b" 'BEGIN { printf "%.2fx", a / b }')" \
      "$(awk -v a="$n" -v b="$c" 'BEGIN { printf "%.2fx", a / b }')"
  done
  unset best
done
echo
echo "targets: sum(x) credits/bigint <= 1.15x; sum(x * 3 / 7) numeric/credits >= 2x"
