# Throwaway PostgreSQL 15 servers for the demo and the benchmarks.  Source this file, then:
#
#   tmp_server_start NAME      initdb + start a server with pg_cron preloaded, in a new
#                              directory under TMPDIR (default /tmp); sets PGHOST,
#                              PGPORT, PGUSER, PGDATABASE (a database NAME with credits and
#                              pg_cron installed) and TMP_SERVER_DIR
#   tmp_server_stop            stop it and remove its files (also run on exit)
#   as_pg CMD...               run a command as the server's owner (postgres when root)
#   psql ARGS...               psql on that server as its owner, quiet, stopping at the first
#                              error (the benchmarks' way to talk to it)
#   funded_accounts_sql N BALANCE AT [DEDUCTED_UNTIL [DEDUCTED_FROM]]
#                              SQL loading accounts 1..N opened at AT, each funded by one
#                              completed deposit of BALANCE; DEDUCTED_UNTIL (an SQL
#                              expression, default '-infinity') is their billing clock, and
#                              DEDUCTED_FROM (default null) where their deducted hours begin:
#                              usage rows loaded completed must lie in between; each deposit
#                              is the account's paid credit lot
#   lots_follow_balances_sql    SQL giving each account's paid lot (funded_accounts_sql's) the
#                              account's balance as what remains of it, after a load that
#                              debited the balances directly
#
#   tmp_server_copy SRC...     copy files or directories into TMP_SERVER_DIR, readable by
#                              the server's owner (the tree itself may not be: /root is 0700)
#
# As root the server and its clients run as the postgres user (initdb refuses root), from
# the directory /, so that the caller's directory need not be readable by it.  The cluster is
# UTF-8 whatever the caller's locale (none, or one that is not installed): every command runs
# under LC_ALL=C.UTF-8 (C when that locale is missing) and clients talk UTF-8.  Extra
# postgresql.conf lines can be passed in TMP_SERVER_CONF.  PGBIN defaults to the binaries of
# PG_CONFIG, else of /usr/lib/postgresql/15.
PGBIN=${PGBIN:-$("${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" --bindir 2>/dev/null ||
                echo /usr/lib/postgresql/15/bin)}
if locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then
  export LC_ALL=C.UTF-8; TMP_SERVER_LOCALE=(--locale=C.UTF-8)
else
  export LC_ALL=C; TMP_SERVER_LOCALE=(--no-locale)
fi
unset LANGUAGE
export PGCLIENTENCODING=UTF8

psql() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

funded_accounts_sql() {
  cat <<SQL
INSERT INTO credits.accounts (project_id, balance, opened_at, deducted_until, deducted_from)
SELECT p, '$2', '$3', ${4:-"'-infinity'"}, ${5:-NULL} FROM generate_series(1, $1) AS p;
INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description, completed_at)
SELECT p, 'deposit', 'completed', '$2', '$3', 'Deposit', '$3' FROM generate_series(1, $1) AS p;
INSERT INTO credits.credit_lots (transaction_id, project_id, kind, amount, remaining, created_at)
SELECT t.transaction_id, t.project_id, 'paid', t.amount, t.amount, t.completed_at
  FROM credits.transactions t WHERE t.type = 'deposit' AND t.project_id <= $1;
SQL
}

lots_follow_balances_sql() {
  cat <<'SQL'
UPDATE credits.credit_lots l
   SET remaining = a.balance, used = l.amount - a.balance, active = a.balance > '0'::credits.credits,
       ended = CASE WHEN a.balance = '0'::credits.credits THEN 'used' END
  FROM credits.accounts a WHERE a.project_id = l.project_id AND l.kind = 'paid';
SQL
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

tmp_server_copy() {
  cp -R "$@" "$TMP_SERVER_DIR/"
  if [ "$(id -u)" = 0 ]; then chown -R postgres: "$TMP_SERVER_DIR"; fi
}

# A free TCP port on loopback, from FROM (default 55432) on.
tmp_server_free_port() {
  local port
  for port in $(seq "${1:-55432}" 55532); do
    if ! (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then echo "$port"; return; fi
  done
  echo "no free port" >&2; return 1
}

tmp_server_start() {
  local name=$1
  TMP_SERVER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/credits-$name.XXXXXX")
  trap tmp_server_stop EXIT
  trap 'exit 130' INT TERM HUP
  if [ "$(id -u)" = 0 ]; then chown postgres: "$TMP_SERVER_DIR"; fi
  as_pg "$PGBIN/initdb" -D "$TMP_SERVER_DIR/data" -A trust -U postgres --no-sync \
    -E UTF8 "${TMP_SERVER_LOCALE[@]}" >/dev/null
  as_pg tee -a "$TMP_SERVER_DIR/data/postgresql.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$TMP_SERVER_DIR'
shared_preload_libraries = 'pg_cron'
cron.database_name = '$name'
timezone = 'UTC'
lc_messages = 'C'
max_connections = 100
shared_buffers = 512MB
${TMP_SERVER_CONF:-}
CONF
  tmp_server_listen
  export PGHOST=$TMP_SERVER_DIR PGPORT PGUSER=postgres PGDATABASE=$name
  as_pg "$PGBIN/psql" -X -q -d postgres -c "CREATE DATABASE \"$name\"" >/dev/null
  as_pg "$PGBIN/psql" -X -q -c "CREATE EXTENSION credits" -c "CREATE EXTENSION pg_cron" \
    -c "ALTER DATABASE \"$name\" SET search_path = \"\$user\", public, credits" >/dev/null
}

# Starts the server on a free port.  Other scripts start servers too: when one of them took
# the port between the look and the start, the next free port is tried.
tmp_server_listen() {
  local try port=55432
  for try in 1 2 3 4 5; do
    PGPORT=$(tmp_server_free_port "$port") || return 1
    port=$((PGPORT + 1))
    echo "port = $PGPORT" | as_pg tee -a "$TMP_SERVER_DIR/data/postgresql.conf" >/dev/null
    as_pg tee "$TMP_SERVER_DIR/server.log" </dev/null
    as_pg "$PGBIN/pg_ctl" -D "$TMP_SERVER_DIR/data" -l "$TMP_SERVER_DIR/server.log" -w start \
      >/dev/null 2>&1 && return 0
    grep -q 'could not bind' "$TMP_SERVER_DIR/server.log" || break
  done
  echo "tmp_server: the server did not start; its log ends:" >&2
  tail -n 15 "$TMP_SERVER_DIR/server.log" >&2
  return 1
}

tmp_server_stop() {
  [ -n "${TMP_SERVER_DIR:-}" ] || return 0
  if [ -f "$TMP_SERVER_DIR/data/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$TMP_SERVER_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$TMP_SERVER_DIR"
  TMP_SERVER_DIR=
}
