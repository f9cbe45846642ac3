#!/usr/bin/env bash
# The credits demo, from a fresh Debian 12 machine (as root) or a prepared one: installs what
# it needs (test/setup.sh), starts a throwaway server with pg_cron preloaded, and plays one
# project's story (test/demo.sql), scene by scene: a deposit charged by the reference payment
# worker, GPU instances, a volume and API calls, an hour billed, the billing page, the balance
# running out, instances terminated and the volume locked, a deposit unlocking it.
#
#   test/demo.sh            from any directory, under any LANG or none
#
# The server is removed at the end, also when a step fails.  The tree itself may be unreadable
# by the server's owner (a clone in /root): the server gets its own copy of what it reads.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/tmp_server.sh"        # first: it sets a locale that exists for everything after
"$here/setup.sh" >/dev/null
tmp_server_start credits_demo

# The payment worker runs from the server's copy, with a fresh fake provider; the story's
# scenes are read from there too.
tmp_server_copy "$here/worker" "$here/demo.sql" "$here/demo"
export DEMO_WORKER=$TMP_SERVER_DIR/worker/payment_worker.pl
export FAKE_PROVIDER_STORE=$TMP_SERVER_DIR/provider
export DEMO_DIR=$TMP_SERVER_DIR
story=(-f "$TMP_SERVER_DIR/demo.sql")
for scene in "$TMP_SERVER_DIR"/demo/[0-9]*.sql; do story+=(-f "$scene"); done
psql "${story[@]}"
