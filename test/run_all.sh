#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine (as root) or a prepared one:
# packages, build and install (test/setup.sh), then regress, isolation specs, TAP tests, the
# regress and isolation suites again under UBSan, and a short fuzz run, each on its own
# throwaway server, and (as root) the demo from a directory the postgres user cannot read
# (test/demo_anywhere.sh). Ends with one line "N passed, N failed".
#
# Works from any directory and under any LANG or none (the tests get C.UTF-8, else C).  As
# root the tests run as the postgres user (initdb refuses root) in a copy of the tree under
# /tmp, removed when everything passed and kept for its logs and diffs when not.
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
if locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then
  export LANG=C.UTF-8 LC_ALL=C.UTF-8
else
  export LANG=C LC_ALL=C
fi
unset LANGUAGE
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}

"$src/test/setup.sh" || { echo "0 passed, 1 failed"; exit 1; }

if [ "$(id -u)" = 0 ]; then
  work=$(mktemp -d /tmp/credits-tests.XXXXXX)
  cp -a "$src/." "$work/"
  chown -R postgres: "$work"
  as_tester() { runuser -u postgres -- "$@"; }
  # Any server a suite left running (when interrupted) is stopped; the copy goes when all passed.
  finish() {
    local pid
    for pid in "$work"/tmp_check*/data/postmaster.pid "$work"/tmp_check/t_*/pgdata/postmaster.pid; do
      [ -f "$pid" ] && as_tester "$("$PG_CONFIG" --bindir)/pg_ctl" -D "$(dirname "$pid")" -m immediate stop >/dev/null 2>&1
    done
    [ "${failed:-1}" = 0 ] && [ "${passed:-0}" -gt 0 ] && rm -rf "$work"
  }
  trap finish EXIT
  trap 'exit 130' INT TERM HUP
else
  work=$src
  as_tester() { "$@"; }
fi
cd "$work" || exit 1
logs=$work/test-logs
as_tester mkdir -p "$logs"

passed=0 failed=0
count() {  # count NAME OK FAILED
  echo "== $1: $2 passed, $3 failed"
  passed=$((passed + $2)); failed=$((failed + $3))
}

# pg_regress and pg_isolation_regress print one "... ok" or "... FAILED" line per test.
for suite in regresscheck isolationcheck; do
  as_tester make -C "$work" -s PG_CONFIG="$PG_CONFIG" "$suite" 2>&1 | tee "$logs/$suite.log"
  ok=$(grep -cE '\.\.\. ok' "$logs/$suite.log")
  bad=$(grep -cE '\.\.\. FAILED|\.\.\. failed' "$logs/$suite.log")
  [ "$ok" = 0 ] && [ "$bad" = 0 ] && bad=1   # the suite did not run at all
  count "$suite" "$ok" "$bad"
done

# prove prints one "file .. ok" line per passing test file.
ntap=$(ls "$work"/test/t/*.pl 2>/dev/null | wc -l)
if [ "$ntap" -gt 0 ]; then
  as_tester make -C "$work" -s PG_CONFIG="$PG_CONFIG" tapcheck 2>&1 | tee "$logs/tapcheck.log"
  ok=$(grep -cE '^test/t/.*\.pl \.+ ok' "$logs/tapcheck.log")
  count tapcheck "$ok" $((ntap - ok))
fi

# The regress and isolation suites once more against the extension built with UBSan (every
# integer overflow, shift and conversion of the C code checked); test/sanitize.sh documents it,
# and its valgrind mode (too slow for every run).
if SANITIZE_VALGRIND=0 "$work/test/sanitize.sh" > "$logs/sanitize.log" 2>&1; then
  tail -1 "$logs/sanitize.log"; count sanitize 1 0
else
  tail -30 "$logs/sanitize.log"; count sanitize 0 1
fi

# The text-parser fuzzer: a short run; any crash or round-trip mismatch fails it.
if as_tester "$work/test/fuzz/run.sh" "$FUZZ_SECONDS" > "$logs/fuzz.log" 2>&1; then
  tail -3 "$logs/fuzz.log"; count fuzz 1 0
else
  tail -30 "$logs/fuzz.log"; count fuzz 0 1
fi

# The demo as a newcomer runs it: from a tree the postgres user cannot read, without LANG and
# with a LANG that names no installed locale; it must leave nothing behind (root only: as any
# other user the demo's server runs as that user).
if [ "$(id -u)" = 0 ]; then
  if PG_CONFIG="$PG_CONFIG" "$src/test/demo_anywhere.sh" > "$logs/demo_anywhere.log" 2>&1; then
    tail -1 "$logs/demo_anywhere.log"; count demo_anywhere 1 0
  else
    tail -30 "$logs/demo_anywhere.log"; count demo_anywhere 0 1
  fi
else
  echo "== demo_anywhere: not run (needs root)"
fi

for f in regression.diffs output_iso/regression.diffs; do
  [ -s "$work/$f" ] && echo "differences: $work/$f"
done
if [ "$failed" != 0 ] || [ "$work" = "$src" ]; then echo "logs: $logs"; fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
