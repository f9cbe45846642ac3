#!/usr/bin/env bash
# The credits demo, from a fresh Debian 12 machine (as root) or a prepared one: installs what
# it needs (test/setup.sh), starts a throwaway server with pg_cron preloaded, and plays one
# project's story (test/demo.sql): deposits charged by the reference payment worker, GPU
# instances, a volume and API calls, hours billed, the dashboard and history, an auto-recharge
# approved and one declined, the balance running out, instances terminated and the volume
# locked, a deposit unlocking it.  The server is removed at the end.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/setup.sh" >/dev/null
source "$here/lib/tmp_server.sh"
tmp_server_start credits_demo

# The worker runs as the server's owner from a copy it can read, with a fresh fake provider.
as_pg cp -r "$here/worker" "$TMP_SERVER_DIR/worker"
export DEMO_WORKER=$TMP_SERVER_DIR/worker/payment_worker.pl
export FAKE_PROVIDER_STORE=$TMP_SERVER_DIR/provider
as_pg psql -X -q < "$here/demo.sql"
