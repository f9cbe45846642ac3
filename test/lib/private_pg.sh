# A private copy of the PostgreSQL installation, for builds that must not be installed
# system-wide (test/sanitize.sh, test/fuzz/recv_mutants.sh).  Source this file, then:
#
#   as_tester CMD...                   run a command as the tests' user (postgres when root,
#                                      from /: the caller's directory may be unreadable to it)
#   private_pg_install ROOT            copy bin, lib and share under ROOT (the headers are
#                                      linked, only read); sets private_pg_config, whose
#                                      postgres, pg_regress and pg_config find their files
#                                      relative to where they are; the copy has no credits
#   clean_tree_copy SRC DEST           copy the source tree without build and test outputs
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}

if [ "$(id -u)" = 0 ]; then
  as_tester() { (cd / && runuser -u postgres -- "$@"); }
else
  as_tester() { "$@"; }
fi

private_pg_install() {
  local root=$1 bindir libbase sharedir includedir pkglibdir
  bindir=$("$PG_CONFIG" --bindir)
  libbase=$(dirname "$bindir")                     # /usr/lib/postgresql/15
  sharedir=$("$PG_CONFIG" --sharedir)              # /usr/share/postgresql/15
  includedir=$("$PG_CONFIG" --includedir)          # /usr/include/postgresql
  pkglibdir=$("$PG_CONFIG" --pkglibdir)
  mkdir -p "$root$(dirname "$libbase")" "$root$(dirname "$sharedir")" "$root$(dirname "$includedir")"
  cp -a "$libbase" "$root$(dirname "$libbase")/"
  cp -a "$sharedir" "$root$(dirname "$sharedir")/"
  ln -s "$includedir" "$root$includedir"
  rm -rf "$root$pkglibdir/credits.so" "$root$pkglibdir/bitcode/credits" \
         "$root$pkglibdir/bitcode/credits.index.bc" "$root$sharedir/extension/credits"*
  private_pg_config=$root$bindir/pg_config
  [ "$("$private_pg_config" --sharedir)" = "$root$sharedir" ] || {
    echo "private_pg_install: the copied pg_config does not find its own share directory" >&2; return 1; }
}

clean_tree_copy() {
  cp -a "$1" "$2"
  rm -rf "$2"/{tmp_check,tmp_check_iso,results,output_iso,log} "$2"/src/*.o "$2"/src/*.bc \
         "$2"/*.so "$2"/regression.*
}
