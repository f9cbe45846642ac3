#!/usr/bin/env bash
# The demo as a newcomer runs it on a fresh machine, as root: from a copy of the tree in a
# directory the postgres user cannot read (as a clone in /root, mode 0700, is), invoked by
# absolute path from another unreadable directory with LANG unset, and by relative path with
# LANG naming a locale that is not installed.  Each run must succeed, tell the whole story
# (the history adds up to the balance, and the last line is verify()'s clean verdict), print
# its tables aligned (a SQL_ASCII server counts the bytes of "•" and misaligns them) within
# 100 columns, say the same thing both times, and leave no file and no server behind.  Then a
# demo with a failing scene must fail and also leave nothing behind.
#
#   test/demo_anywhere.sh        as root (test/run_all.sh runs it); PG_CONFIG as for the demo
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" != 0 ]; then
  echo "demo_anywhere: must run as root (the demo's server runs as postgres only then)" >&2
  exit 1
fi

home=$(mktemp -d /tmp/credits-newcomer.XXXXXX)            # mode 0700, like /root
export TMPDIR=$(mktemp -d /tmp/credits-newcomer-tmp.XXXXXX)   # the demo's servers go here only
trap 'rm -rf "$home" "$TMPDIR"' EXIT
chmod 755 "$TMPDIR"
mkdir "$home/credits"
# What a clone holds (the files git tracks, and new ones it does not ignore): nothing built.
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$src" ls-files -z --cached --others --exclude-standard |
    tar -C "$src" --null -T - -cf - | tar -C "$home/credits" -xf -
else
  tar -C "$src" --exclude=.git --exclude='tmp_check*' --exclude=results --exclude=output_iso \
      --exclude=test-logs -cf - . | tar -C "$home/credits" -xf -
fi
if runuser -u postgres -- test -r "$home/credits/test/demo.sh"; then
  echo "demo_anywhere: postgres can read $home: the test would prove nothing" >&2; exit 1
fi

fail() { echo "demo_anywhere: $*" >&2; exit 1; }

# In every table, the column separators ("|", "+" in the rule under the header) of each line
# stand at the same character positions.
aligned() {
  perl -CSD -ne 'if (/[|]|^-+\+/) { my $sep = /^-+\+/ ? qr/\+/ : qr/\|/; my @at;
                    push @at, pos while /$sep/g; my $p = "@at";
                    $first //= $p; exit 1 if $p ne $first } else { undef $first }' "$1"
}

# Nothing of a demo's server is left: no directory, so no server either (its data was there).
nothing_left() {
  [ -z "$(ls -A "$TMPDIR")" ] || fail "$1 left files behind: $(ls -A "$TMPDIR")"
}

# run NAME DIR COMMAND...: runs the demo from DIR with the given environment, keeps its output.
run() {
  local name=$1 dir=$2; shift 2
  echo "demo_anywhere: $name"
  (cd "$dir" && "$@") > "$home/$name.out" 2> "$home/$name.err" ||
    { tail -n 20 "$home/$name.out" "$home/$name.err"; fail "$name: the demo failed"; }
  [ ! -s "$home/$name.err" ] || { cat "$home/$name.err"; fail "$name: the demo wrote to stderr"; }
  tail -1 "$home/$name.out" | grep -q 'every invariant holds' ||
    { tail -n 5 "$home/$name.out"; fail "$name: the story did not reach its end"; }
  grep -q 'add up to [0-9.]* which is the balance' "$home/$name.out" ||
    fail "$name: the history does not add up to the balance"
  grep -q 'Visa •••• 4242' "$home/$name.out" || fail "$name: the card's label is not printed in UTF-8"
  aligned "$home/$name.out" || fail "$name: a table is misaligned"
  perl -CSD -ne 'chomp; exit 1 if length > 100' "$home/$name.out" ||
    fail "$name: a line is wider than 100 columns"
  nothing_left "$name"
}

run no-lang "$home" env -u LANG -u LC_ALL -u LC_CTYPE -u LC_MESSAGES -u LANGUAGE \
    "$home/credits/test/demo.sh"
run bogus-lang "$home/credits" env -u LC_ALL LANG=xx_XX.UTF-8 LC_CTYPE=xx_XX.UTF-8 ./test/demo.sh
cmp -s "$home/no-lang.out" "$home/bogus-lang.out" ||
  { diff "$home/no-lang.out" "$home/bogus-lang.out" | head -20; fail "the two runs told different stories"; }

# A scene that fails: the demo fails, and cleans up all the same.
echo "demo_anywhere: failing-scene"
echo 'SELECT credits.add_credits(42, $$-1$$);' > "$home/credits/test/demo/15_failing.sql"
if (cd "$home" && "$home/credits/test/demo.sh") > "$home/failing.out" 2>&1; then
  fail "failing-scene: the demo succeeded"
fi
grep -q 'ERROR' "$home/failing.out" || { tail -n 10 "$home/failing.out"; fail "failing-scene: no error shown"; }
nothing_left failing-scene
echo "demo_anywhere: ok"
