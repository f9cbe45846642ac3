#!/usr/bin/env bash
# Benchmark of the credits type against bigint and numeric(20,6) on one throwaway server:
# sum(x), avg(x) and sum(x * 3 / 7) over ROWS rows (default 10 million) of each type,
# best of 3 runs, with parallel workers off and on. Prints the times and the ratios.
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
psql() { as_pg psql -X -q -v ON_ERROR_STOP=1 "$@"; }

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

# Best time in ms of 3 runs of one query, with the given number of workers per gather.
best_of_3() {  # best_of_3 WORKERS QUERY
  psql <<SQL | awk '/^Time:/ { t = $2 + 0; if (best == "" || t < best) best = t } END { printf "%.1f", best }'
SET search_path = public, credits;
SET max_parallel_workers_per_gather = $1;
SET jit = off;
SELECT count(*) FROM ${2##* FROM };  -- warm the cache
\o /dev/null
\timing on
$2;
$2;
$2;
SQL
}

# the plan with workers on
psql -At <<'SQL' | sed 's/^ *//; s/ *(cost.*//; s/^/  /'
SET search_path = public, credits;
SET max_parallel_workers_per_gather = 2;
EXPLAIN SELECT sum(x) FROM t_credits;
SQL

printf '\n%d rows, best of 3, jit off, %s\n' "$rows" "$(psql -At -c 'SHOW server_version')"
printf '%-8s %-16s %12s %12s %12s %16s %17s\n' workers query credits_ms bigint_ms numeric_ms credits/bigint numeric/credits
for workers in 0 2; do
  for q in "${queries[@]}"; do
    declare -A ms=()
    for t in "${types[@]}"; do
      ms[$t]=$(best_of_3 "$workers" "SELECT $q FROM t_$t")
    done
    printf '%-8s %-16s %12s %12s %12s %16s %17s\n' "$workers" "$q" \
      "${ms[credits]}" "${ms[bigint]}" "${ms[numeric]}" \
      "$(awk -v a="${ms[credits]}" -v b="${ms[bigint]}" 'BEGIN { printf "%.2fx", a / b }')" \
      "$(awk -v a="${ms[numeric]}" -v b="${ms[credits]}" 'BEGIN { printf "%.2fx", a / b }')"
  done
done
echo
echo "targets: sum(x) credits/bigint <= 1.15x; sum(x * 3 / 7) numeric/credits >= 2x"
