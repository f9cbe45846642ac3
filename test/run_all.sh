#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine (as root) or a prepared one:
# packages, build and install (test/setup.sh), then regress, isolation specs, TAP tests, the
# regress and isolation suites again under UBSan, and a short fuzz run, each on its own
# throwaway server. Ends with one line "N passed, N failed".
#
# As root the tests run as the postgres user (initdb refuses root) in a copy of the tree.
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}

"$src/test/setup.sh" || { echo "0 passed, 1 failed"; exit 1; }

if [ "$(id -u)" = 0 ]; then
  work=$(mktemp -d /tmp/credits-tests.XXXXXX)
  cp -a "$src/." "$work/"
  chown -R postgres: "$work"
  as_tester() { runuser -u postgres -- "$@"; }
else
  work=$src
  as_tester() { "$@"; }
fi
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

for f in regression.diffs output_iso/regression.diffs; do
  [ -s "$work/$f" ] && echo "differences: $work/$f"
done
echo "logs: $logs"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
