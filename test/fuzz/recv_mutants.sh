#!/usr/bin/env bash
# Proves that the binary-input fuzzer (test/t/080_recv_fuzz.pl) can fail: builds the extension
# once per deliberate bug in credits_recv or credits_send, installs each build into a private
# copy of the PostgreSQL installation (nothing installed system-wide, as test/sanitize.sh), runs
# the fuzzer against it, and expects the fuzzer to fail on every bug and to pass on the
# unchanged code.  The fuzzer runs with random cases only (CREDITS_RECV_FUZZ_FIXED=0): its
# fixed edge cases would catch most of these bugs at once, the random ones must too.  Prints
# the first failure of each path per bug; exits non-zero if a bug went unnoticed.
#
#   test/fuzz/recv_mutants.sh              as root (the tests then run as postgres) or as postgres
#   RECV_FUZZ_SECONDS=N test/fuzz/recv_mutants.sh   fuzzing time per path and build (default 3)
#   KEEP=1 test/fuzz/recv_mutants.sh       keep the work directory (each build's prove output)
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../lib/private_pg.sh
. "$src/test/lib/private_pg.sh"
seconds=${RECV_FUZZ_SECONDS:-3}

work=$(mktemp -d /tmp/credits-mutants.XXXXXX)
cleanup() { [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

# The private PostgreSQL installation, and the tree to build in it.
private_pg_install "$work/root"
clean_tree_copy "$src" "$work/tree"
if [ "$(id -u)" = 0 ]; then chown -R postgres: "$work"; fi
io=$work/tree/src/credits_io.c
cp "$io" "$work/credits_io.c.orig"

# The deliberate bugs: a name, the line replaced, and the C code put in its place.
recv_line='	PG_RETURN_CREDITS((Credits) pq_getmsgint64(buf));'
send_line='	pq_sendint64(&buf, (int64) value);'
names=() lines=() bodies=()
mutant() { names+=("$1"); lines+=("$2"); bodies+=("$3"); }
mutant little-endian "$recv_line" \
  '	int64 v; memcpy(&v, pq_getmsgbytes(buf, 8), 8); PG_RETURN_CREDITS((Credits) v);'
mutant four-bytes "$recv_line" \
  '	PG_RETURN_CREDITS((Credits) (int32) pq_getmsgint(buf, 4));'
mutant negated "$recv_line" \
  '	PG_RETURN_CREDITS((Credits) (0 - (uint64) pq_getmsgint64(buf)));'
mutant short-accepted "$recv_line" \
  '	uint64 v = 0; int n = Min(buf->len - buf->cursor, 8); while (n-- > 0) v = (v << 8) | (uint8) pq_getmsgbyte(buf); PG_RETURN_CREDITS((Credits) v);'
mutant long-accepted "$recv_line" \
  '	int64 v = pq_getmsgint64(buf); buf->cursor = buf->len; PG_RETURN_CREDITS((Credits) v);'
mutant low-half-sign-extended "$recv_line" \
  '	int32 hi = (int32) pq_getmsgint(buf, 4); int32 lo = (int32) pq_getmsgint(buf, 4); PG_RETURN_CREDITS((Credits) (((uint64) (int64) hi << 32) | (uint64) (int64) lo));'
mutant reads-past-end "$recv_line" \
  '	uint64 v; memcpy(&v, buf->data + buf->cursor, 8); buf->cursor += 8; PG_RETURN_CREDITS((Credits) pg_ntoh64(v));'
mutant min-refused "$recv_line" \
  '	int64 v = pq_getmsgint64(buf); if (v == PG_INT64_MIN) ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE), errmsg("credits out of range"))); PG_RETURN_CREDITS((Credits) v);'
mutant bit62-lost "$recv_line" \
  '	PG_RETURN_CREDITS((Credits) (pq_getmsgint64(buf) & ~(INT64CONST(1) << 62)));'
mutant zero-as-null "$recv_line" \
  '	int64 v = pq_getmsgint64(buf); if (v == 0) PG_RETURN_NULL(); PG_RETURN_CREDITS((Credits) v);'
mutant send-little-endian "$send_line" \
  '	pq_sendbytes(&buf, (char *) &value, 8);'

# Builds credits_io.c as it is, installs it privately and runs the fuzzer; 0 if it passed.
run_fuzzer() {
  local log=$1
  as_tester make -C "$work/tree" -s PG_CONFIG="$private_pg_config" with_llvm=no install > "$log.build" 2>&1 || {
    echo "build failed: $log.build"; tail -20 "$log.build"; exit 1; }
  as_tester env CREDITS_RECV_FUZZ_SECONDS="$seconds" CREDITS_RECV_FUZZ_FIXED=0 \
    make -C "$work/tree" -s PG_CONFIG="$private_pg_config" with_llvm=no tapcheck \
    PROVE_TESTS=test/t/080_recv_fuzz.pl > "$log" 2>&1
}

status=0
if run_fuzzer "$work/unchanged.log"; then
  echo "unchanged code: fuzzer passes"
else
  echo "unchanged code: fuzzer FAILS (see $work/unchanged.log)"; status=1; KEEP=1
fi
for i in "${!names[@]}"; do
  cp "$work/credits_io.c.orig" "$io"
  IO="$io" LINE="${lines[$i]}" BODY="${bodies[$i]}" perl -0pi -e '
    my ($line, $body) = ($ENV{LINE}, $ENV{BODY});
    s/^\Q$line\E$/$body/m or die "mutation point not found: $line\n";' "$io"
  log=$work/${names[$i]}.log
  if run_fuzzer "$log"; then
    echo "${names[$i]}: NOT caught"; status=1; KEEP=1
  else
    echo "${names[$i]}: caught"
    for path in bind copy; do
      first=$(grep -E "^# $path" "$log" | grep -v 'cases in' | head -1 || true)
      echo "    ${first#\# }"
    done
  fi
done
cp "$work/credits_io.c.orig" "$io"
[ -n "${KEEP:-}" ] && echo "work directory: $work"
exit $status
