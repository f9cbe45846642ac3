#!/usr/bin/env bash
# The credits demo, from a fresh Debian 12 machine (as root) or a prepared one: installs what
# it needs (test/setup.sh), starts a throwaway server with pg_cron preloaded, and plays one
# project's story (test/demo.sql): deposit, GPU instances, a volume and API calls, an hour
# billed, the dashboard and history, the balance running out, instances terminated and the
# volume locked, a deposit unlocking it.  The server is removed at the end.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/setup.sh" >/dev/null
source "$here/lib/tmp_server.sh"
tmp_server_start credits_demo
as_pg psql -X -q < "$here/demo.sql"
