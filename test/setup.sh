#!/usr/bin/env bash
# Prepares a Debian 12 machine for credits (run as root): installs the packages the build,
# the tests, the demo and the benchmarks need, then builds and installs the extension.
# Safe to run again: packages already present are not fetched twice.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
packages=(
  make gcc                      # the build
  postgresql-15                 # server binaries (initdb, postgres, pgbench)
  postgresql-server-dev-15      # PGXS and headers
  postgresql-15-cron            # pg_cron, preloaded by the test and demo servers
  postgresql-15-plproxy         # PL/Proxy, for credits_router (the router's tests and benchmark)
  libipc-run-perl               # PostgreSQL::Test::Cluster (TAP tests)
  libdbd-pg-perl                # the reference payment worker and the model test
  python3-psycopg               # the client-driver test (Decimal amounts from psycopg 3)
  clang libclang-rt-14-dev      # libFuzzer and sanitizers for test/fuzz
)

if [ "$(id -u)" = 0 ]; then
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

make -s PG_CONFIG="$PG_CONFIG"
if [ "$(id -u)" = 0 ]; then
  make -s PG_CONFIG="$PG_CONFIG" install
else
  echo "setup: not root, skipping 'make install' (run it with the rights to write $($PG_CONFIG --pkglibdir))"
fi
