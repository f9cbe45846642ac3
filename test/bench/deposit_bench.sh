#!/usr/bin/env bash
# Benchmark of deposits on one throwaway server: 10,000 projects with a payment method, and
# pgbench scripts (test/bench/deposit_*.sql) run for SECONDS (default 20) each at 1, 8 and 32
# clients:
#   baseline   UPDATE plain_balances SET balance = balance + x WHERE id = random  (one commit)
#   deposit    add_credits, then complete_deposit, as two transactions (app, then worker)
#   deposit1tx add_credits and complete_deposit in one transaction (one commit)
# for a random project each time.  Prints the TPS of each (a deposit = one pgbench
# transaction) and each deposit script's TPS as a fraction of the baseline's, then checks the
# ledger: every deposit completed once, verify() clean.
#
#   test/bench/deposit_bench.sh [SECONDS]
#
# The extension must be installed (make install).  Figures on a shared machine are noisy:
# compare the ratios, not the TPS.
set -euo pipefail
seconds=${1:-20}
clients=(1 8 32)
projects=10000
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib/tmp_server.sh
. "$here/../lib/tmp_server.sh"

tmp_server_start bench_deposit

echo "creating $projects projects with a payment method, and plain_balances ..."
psql <<SQL
SET client_min_messages = warning;
SELECT count(credits.add_payment_method(p, 'pm_bench_' || p))
  FROM generate_series(1, $projects) AS p, LATERAL credits.open_account(p);
CREATE TABLE plain_balances (id bigint PRIMARY KEY, balance bigint NOT NULL DEFAULT 0);
INSERT INTO plain_balances (id) SELECT generate_series(1, $projects);
VACUUM ANALYZE;
SQL

# pgbench reads the scripts as the server's owner; give it copies it can read.
scripts=$TMP_SERVER_DIR/scripts
as_pg mkdir -p "$scripts"
for s in deposit_baseline deposit_add_complete deposit_add_complete_1tx; do
  as_pg tee "$scripts/$s.sql" < "$here/$s.sql" >/dev/null
done

tps() {  # tps SCRIPT CLIENTS
  local threads=$(( $2 < 2 ? $2 : 2 ))
  as_pg pgbench -n -c "$2" -j "$threads" -T "$seconds" -f "$scripts/$1.sql" 2>&1 |
    awk '/^tps = / { printf "%.0f", $3 } /aborted|error/ { print > "/dev/stderr" }'
}

printf '\n%s, %d s per run, %d projects\n' "$(psql -At -c 'SHOW server_version')" "$seconds" "$projects"
printf '%-8s %14s %14s %16s %16s %16s\n' clients baseline_tps deposit_tps deposit1tx_tps \
  deposit/baseline deposit1tx/base
for c in "${clients[@]}"; do
  base=$(tps deposit_baseline "$c")
  dep=$(tps deposit_add_complete "$c")
  dep1=$(tps deposit_add_complete_1tx "$c")
  printf '%-8s %14s %14s %16s %16s %16s\n' "$c" "$base" "$dep" "$dep1" \
    "$(awk -v a="$dep" -v b="$base" 'BEGIN { printf "%.2f", a / b }')" \
    "$(awk -v a="$dep1" -v b="$base" 'BEGIN { printf "%.2f", a / b }')"
done

echo
psql -At <<'SQL'
SELECT 'deposits: ' || count(*) FILTER (WHERE status = 'completed') || ' completed, '
       || count(*) FILTER (WHERE status <> 'completed') || ' not completed'
  FROM credits.transactions;
SELECT 'charge_requested events: ' || count(*) FROM credits.events;
SELECT 'sum of balances = sum of completed deposits: '
       || ((SELECT sum(balance) FROM credits.accounts)
           = (SELECT sum(amount) FROM credits.transactions WHERE status = 'completed'));
SELECT 'verify(): ' || count(*) || ' problems' FROM credits.verify();
SQL
