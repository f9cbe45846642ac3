#!/usr/bin/env bash
# Memory-safety run: the extension built with UndefinedBehaviorSanitizer, and the test servers
# run under valgrind (memcheck); the regress tests and the isolation specs run against them.
# Fails on any UBSan report, on any valgrind error in a stack that goes through credits.so, or
# when a suite fails.
#
#   test/sanitize.sh                   as root (the tests then run as postgres) or as postgres
#   SANITIZE_VALGRIND=0 test/sanitize.sh   UBSan only (fast)
#   SANITIZE_TAP=1 test/sanitize.sh    also the TAP tests (slow under valgrind)
#   KEEP=1 test/sanitize.sh            keep the work directory (reports, logs, results)
#   SANITIZE_SUITES=regresscheck REGRESS="type_io type_arith" test/sanitize.sh   a subset
#
# How it works with Debian's PostgreSQL packages:
#   * Nothing is installed system-wide.  The PostgreSQL installation (bin, lib, share) is
#     copied into a private directory, whose pg_config, postgres and pg_regress find their
#     files relative to where they are; the instrumented build is installed there.  Other users
#     of the machine's PostgreSQL keep the normal build.
#   * UBSan: the extension is compiled with -fsanitize=undefined -fno-wrapv (PostgreSQL's
#     -fwrapv would hide signed overflow; the extension must not rely on it) and links
#     libubsan itself, so the uninstrumented postgres loads it as it is.  Every integer
#     operation, shift, division, conversion, alignment and array bound of the C code is
#     checked: what matters most in a fixed-point money type.  Reports go to files
#     (UBSAN_OPTIONS log_path) and do not stop the server.
#   * valgrind: the private bin/postgres is a wrapper that runs the real server under
#     memcheck (not initdb's bootstrap, nor -V/-C queries).  Debian's server is not built with
#     USE_VALGRIND, so palloc'd chunks are not marked: memcheck sees reads of uninitialised
#     malloc'd memory, use of freed malloc'd memory and overruns of malloc'd blocks and of the
#     stack, not an overrun that stays inside a palloc block.  The server itself writes
#     uninitialised padding bytes to disk on purpose, so only errors whose stack goes through
#     credits.so count.
#   * AddressSanitizer does not work here: with libasan preloaded (as an ASan shared library in
#     an uninstrumented program needs), Debian's postgres and psql hang at startup or exit on
#     glibc's locale locks (setlocale, bindtextdomain, p11-kit's freelocale), with both gcc's
#     and clang's runtimes.
#
# Runtime on a 2-core machine shared with other work: UBSan only about 1 minute; with
# valgrind about 6 minutes (regress and isolation).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/private_pg.sh
. "$src/test/lib/private_pg.sh"
VALGRIND=${SANITIZE_VALGRIND:-1}
start=$(date +%s)

work=$(mktemp -d /tmp/credits-sanitize.XXXXXX)
cleanup() { [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
reports=$work/reports
mkdir -p "$reports"

# The private PostgreSQL installation: the same relative layout under $root.
root=$work/root
private_pg_install "$root"
bindir=$("$PG_CONFIG" --bindir)

if [ "$VALGRIND" = 1 ]; then
  mv "$root$bindir/postgres" "$root$bindir/postgres.real"
  cat > "$root$bindir/postgres" <<EOF
#!/bin/sh
# The server under valgrind; initdb's bootstrap and the one-shot queries run as they are.
for a in "\$@"; do
  case "\$a" in --boot|--single|-V|--version|-C|--describe-config) exec "\$0.real" "\$@";; esac
done
exec valgrind --quiet --tool=memcheck --error-limit=no --num-callers=40 --read-var-info=no \\
  --trace-children=no --log-file="$reports/valgrind.%p" "\$0.real" "\$@"
EOF
  chmod +x "$root$bindir/postgres"
fi

# The tree: this checkout, without the build and test outputs.
clean_tree_copy "$src" "$work/src"
if [ "$(id -u)" = 0 ]; then chown -R postgres: "$work"; fi

ubsan='-fsanitize=undefined -fno-wrapv -fno-omit-frame-pointer -g'
mk() { as_tester make -C "$work/src" -s PG_CONFIG="$private_pg_config" with_llvm=no "$@"; }
mk COPT="$ubsan"
mk COPT="$ubsan" install

export UBSAN_OPTIONS="log_path=$reports/ubsan:print_stacktrace=1:halt_on_error=0"
export PGOPTIONS='-c jit=off'
export PGCTLTIMEOUT=300

status=0
suites=(regresscheck isolationcheck)
[ -n "${SANITIZE_TAP:-}" ] && suites+=(tapcheck)
[ -n "${SANITIZE_SUITES:-}" ] && read -r -a suites <<< "$SANITIZE_SUITES"
subset=()
[ -n "${REGRESS:-}" ] && subset+=(REGRESS="$REGRESS")
[ -n "${ISOLATION:-}" ] && subset+=(ISOLATION="$ISOLATION")
for suite in "${suites[@]}"; do
  t0=$(date +%s)
  if ! mk "${subset[@]}" "$suite" > "$reports/$suite.out" 2>&1; then
    echo "sanitize: $suite failed"; status=1
  fi
  grep -E '\.\.\. (ok|FAILED|failed)|tests passed|tests failed|^Result' "$reports/$suite.out" | grep -v '\.\.\. ok' || true
  echo "sanitize: $suite ran $(( $(date +%s) - t0 )) s"
done

# UBSan reports: in their files, or in the server logs (where they go when the server's
# stderr is its log).
for f in $(find "$reports" -name 'ubsan.*'); do echo "== UBSan: $f"; head -40 "$f"; status=1; done
for f in $(grep -rlE 'runtime error:' "$work/src"/tmp_check*/log "$work/src"/log "$work/src"/output_iso 2>/dev/null || true); do
  echo "== UBSan: $f"; grep -E -A12 'runtime error:' "$f" | head -60; status=1
done

# valgrind errors whose stack goes through the extension: a frame in credits.so, or (with
# its debug information) in one of its source files.
if [ "$VALGRIND" = 1 ]; then
  ours="credits\\.so|[(]($(cd "$src/src" && ls *.c | sed 's/\.c$//' | paste -sd '|'))\\.c:"
  n=0
  for f in "$reports"/valgrind.*; do
    [ -e "$f" ] || continue
    n=$((n + 1))
    # one error per block of lines between blank lines ("==pid== " prefixes)
    errs=$(sed 's/^==[0-9]*== \{0,1\}//' "$f" | awk -v ours="$ours" 'BEGIN { RS = "" } $0 ~ ours' || true)
    if [ -n "$errs" ]; then echo "== valgrind: $f"; echo "$errs" | head -80; status=1; fi
  done
  echo "sanitize: $n server processes under valgrind"
  [ "$n" -gt 0 ] || { echo "sanitize: valgrind did not run"; status=1; }
fi

for f in "$work/src/regression.diffs" "$work/src/output_iso/regression.diffs"; do
  if [ -s "$f" ]; then echo "== $f"; head -100 "$f"; fi
done
echo "sanitize: $([ $status = 0 ] && echo 'no report, all suites passed' || echo FAILED) in $(( $(date +%s) - start )) s"
if [ -n "${KEEP:-}" ]; then echo "sanitize: work directory $work"; fi
exit $status
