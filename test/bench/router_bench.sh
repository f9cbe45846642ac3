#!/usr/bin/env bash
# The PL/Proxy router's cost, on throwaway servers on this machine (about 3 minutes):
#
#   direct     pgbench on shard A itself:      SELECT credits.record_usage(p, ...)
#                                              SELECT * FROM credits.balance_overview WHERE project_id = p
#   router1    the same calls through a router whose 16 partitions are all on shard A
#              (credits.record_usage(p, ...), SELECT * FROM credits.balance_overview(p))
#   router2    through a router whose 16 partitions alternate between shards A and B
#
# at 1, 8 and 32 clients (router2 at 8 and 32), p random among 1,000 funded projects.  Prints
# TPS, average latency, the router's added latency per call (router1 - direct), the ratios
# router1/direct and router2/router1, and the CPU time per call spent by each server (router,
# shard A, shard B: utime + stime of the server's processes over the run, from /proc).  The
# router and both shards share this machine's cores with pgbench, so router2 cannot show the
# gain that two machines would: read its CPU per call, not its TPS, for what a shard costs.
#
#   test/bench/router_bench.sh [SECONDS]      (default 5 s per run; ROUNDS=N, default 2, best kept)
#
# credits and credits_router must be installed (make install) and PL/Proxy present.
set -euo pipefail
seconds=${1:-5}
rounds=${ROUNDS:-2}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib/tmp_server.sh
. "$here/../lib/tmp_server.sh"

# Three servers: shard A, shard B, the router.  tmp_server.sh keeps one at a time: each is
# remembered, and its stop (run on exit, also when a later start fails) stops them all.
declare -A dir port
scripts=$(mktemp -d /tmp/credits-router-bench.XXXXXX)
chmod 755 "$scripts"
eval "one_$(declare -f tmp_server_stop)"
tmp_server_stop() {
  for s in "${!dir[@]}"; do TMP_SERVER_DIR=${dir[$s]} one_tmp_server_stop; done
  one_tmp_server_stop
  rm -rf "$scripts"
}
trap tmp_server_stop EXIT
for s in rb_shard_a rb_shard_b rb_router; do
  tmp_server_start "$s"
  dir[$s]=$TMP_SERVER_DIR port[$s]=$PGPORT
  TMP_SERVER_DIR=
done
on() { local s=$1; shift; psql -h "${dir[$s]}" -p "${port[$s]}" "$@"; }
conn() { echo "host=${dir[$1]} port=${port[$1]} dbname=$1"; }

# Shard A: projects 1..1000 (for direct and router1).  The routers: router1 sends every
# partition to A, router2 alternates A and B and has its own projects 100001..101000.
fund='SELECT credits.open_account(p), credits.add_payment_method(p, $$pm$$),
             credits.complete_deposit(p, credits.add_credits(p, $$1000000.00$$))'
on rb_shard_a -d rb_shard_a -c "SET client_min_messages = warning" -c "$fund FROM generate_series(1, 1000) p" >/dev/null
on rb_shard_b -d rb_shard_b -c "SELECT 1" >/dev/null
for r in router1 router2; do
  opts=
  for k in $(seq 0 15); do
    s=rb_shard_a; [ "$r" = router2 ] && [ $((k % 2)) = 1 ] && s=rb_shard_b
    opts+="${opts:+, }p$k '$(conn $s)'"
  done
  on rb_router -d postgres -c "CREATE DATABASE $r" >/dev/null
  on rb_router -d "$r" -c "CREATE EXTENSION plproxy" \
    -c "CREATE SERVER credits FOREIGN DATA WRAPPER plproxy OPTIONS ($opts)" \
    -c "CREATE USER MAPPING FOR PUBLIC SERVER credits" -c "CREATE EXTENSION credits_router" >/dev/null
done
on rb_router -d router2 -c "SET client_min_messages = warning" -c "$fund FROM generate_series(100001, 101000) p" >/dev/null
echo "router2 placement: shard A $(on rb_shard_a -d rb_shard_a -At -c 'SELECT count(*) FROM credits.accounts WHERE project_id > 100000'), shard B $(on rb_shard_b -d rb_shard_b -At -c 'SELECT count(*) FROM credits.accounts')"

cat > "$scripts/usage.sql" <<'SQL'
\set p :base + random(1, 1000)
SELECT credits.record_usage(:p, 'api-bench', '0.0042');
SQL
cat > "$scripts/overview_direct.sql" <<'SQL'
\set p :base + random(1, 1000)
SELECT * FROM credits.balance_overview WHERE project_id = :p;
SQL
cat > "$scripts/overview_router.sql" <<'SQL'
\set p :base + random(1, 1000)
SELECT * FROM credits.balance_overview(:p);
SQL

# CPU ticks so far of a server: its postmaster (with the backends it has reaped) and its
# live processes.
ticks() {
  local pm; pm=$(head -1 "${dir[$1]}/data/postmaster.pid")
  { sed 's/.*) //' "/proc/$pm/stat" | awk '{print $12 + $13 + $14 + $15}'
    for c in $(pgrep -P "$pm"); do sed 's/.*) //' "/proc/$c/stat" 2>/dev/null | awk '{print $12 + $13}'; done
  } | awk '{t += $1} END {print t}'
}
hz=$(getconf CLK_TCK)

# run TARGET SCRIPT CLIENTS -> "tps latency_ms cpu_us_router cpu_us_a cpu_us_b" per call
run() {
  local target=$1 script=$2 clients=$3 s db base=0 threads=$(( $3 < 2 ? $3 : 2 )) out n
  case $target in
    direct) s=rb_shard_a db=rb_shard_a ;;
    router1) s=rb_router db=router1 ;;
    router2) s=rb_router db=router2 base=100000 ;;
  esac
  local before=() after=() x
  for x in rb_router rb_shard_a rb_shard_b; do before+=("$(ticks $x)"); done
  out=$(as_pg "$PGBIN/pgbench" -n -M prepared -T "$seconds" -c "$clients" -j "$threads" -D base=$base \
          -h "${dir[$s]}" -p "${port[$s]}" -f "$scripts/$script.sql" "$db" 2>&1) || { echo "$out" >&2; return 1; }
  sleep 0.5   # (the backends exit and are reaped)
  for x in rb_router rb_shard_a rb_shard_b; do after+=("$(ticks $x)"); done
  n=$(echo "$out" | awk '/number of transactions actually processed/ {print $NF}')
  echo "$out" | awk -v n="$n" -v hz="$hz" -v r="$(( after[0] - before[0] ))" -v a="$(( after[1] - before[1] ))" \
      -v b="$(( after[2] - before[2] ))" '
    /^latency average/ {lat = $4} /^tps = / {tps = $3}
    END {printf "%.0f %.3f %.0f %.0f %.0f\n", tps, lat, r / hz / n * 1e6, a / hz / n * 1e6, b / hz / n * 1e6}'
}

runs=()
for c in 1 8 32; do
  runs+=(direct:usage:$c router1:usage:$c direct:overview_direct:$c router1:overview_router:$c)
done
runs+=(router2:usage:8 router2:overview_router:8 router2:usage:32 router2:overview_router:32)
declare -A best
for round in $(seq 1 "$rounds"); do
  for r in "${runs[@]}"; do
    IFS=: read -r t sc c <<< "$r"
    res=$(run "$t" "$sc" "$c")
    key="$t:${sc%%_*}:$c"
    echo "round $round $key: $res"
    old=${best[$key]:-0 0}
    [ "${old%% *}" -ge "${res%% *}" ] || best[$key]=$res
  done
done

ratio() { echo "scale=2; $1 / $2" | bc -l | sed 's/^\./0./'; }
field() { echo "${best[$1]}" | cut -d' ' -f"$2"; }
printf '\n%s, %d cores shared by pgbench, the router and both shards; %s s per run, best of %s rounds\n' \
  "$(on rb_router -d postgres -At -c 'SHOW server_version')" "$(nproc)" "$seconds" "$rounds"
printf '%-9s %-8s %9s %9s %10s %10s %13s %9s %14s %14s\n' call clients direct_tps router_tps \
  direct_ms router_ms added_ms/call router/dir cpu_us:router cpu_us:shard
for sc in usage overview; do
  for c in 1 8 32; do
    d=direct:$sc:$c r=router1:$sc:$c
    printf '%-9s %-8s %9s %9s %10s %10s %13s %9s %14s %14s\n' "$sc" "$c" "$(field $d 1)" "$(field $r 1)" \
      "$(field $d 2)" "$(field $r 2)" "$(echo "$(field $r 2) - $(field $d 2)" | bc -l | sed 's/^\./0./; s/^-\./-0./')" \
      "$(ratio "$(field $r 1)" "$(field $d 1)")" "$(field $r 3)" "$(field $r 4) (direct $(field $d 4))"
  done
done
printf '\n%-9s %-8s %11s %11s %15s %14s %14s %14s\n' call clients 1shard_tps 2shard_tps 2shard/1shard \
  cpu_us:router cpu_us:shardA cpu_us:shardB
for sc in usage overview; do
  for c in 8 32; do
    o=router1:$sc:$c t=router2:$sc:$c
    printf '%-9s %-8s %11s %11s %15s %14s %14s %14s\n' "$sc" "$c" "$(field $o 1)" "$(field $t 1)" \
      "$(ratio "$(field $t 1)" "$(field $o 1)")" "$(field $t 3)" "$(field $t 4)" "$(field $t 5)"
  done
done
