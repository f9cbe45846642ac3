#!/usr/bin/env bash
# Builds the libFuzzer harness for the credits text parser and printer into
# test/fuzz/build/ and runs it for SECONDS (default 30) from the seed corpus in
# test/fuzz/corpus/. Exits non-zero on any finding (crash, sanitizer report,
# broken round trip) or if it cannot build.
#
#   test/fuzz/run.sh 300
set -euo pipefail
seconds=${1:-30}
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../../src" && pwd)
build=$here/build
cc=${CLANG:-$(command -v clang || command -v clang-14)}

mkdir -p "$build/corpus"
"$cc" -g -O1 -Wall -Wextra -Werror \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -I"$src" "$here/fuzz_credits.c" "$src/credits_parse.c" -o "$build/fuzz_credits"

# New inputs go to build/corpus; the committed seeds are only read.
exec "$build/fuzz_credits" -max_total_time="$seconds" -max_len=128 \
  -dict="$here/credits.dict" -artifact_prefix="$build/" -print_final_stats=1 \
  "$build/corpus" "$here/corpus"
