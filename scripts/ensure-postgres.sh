#!/usr/bin/env bash
# Prints a DATABASE_URL that answers, starting PostgreSQL if it has to:
#   1. $DATABASE_URL, if it answers;
#   2. the local server on 127.0.0.1:5432 (trust auth, user postgres), starting the Debian
#      cluster if it is installed but stopped;
#   3. a throwaway cluster under .dev/pg made with initdb/pg_ctl on port 55432.
# With `--database NAME` it also creates that database if missing and prints its URL instead.
# Anything it cannot do it says on stderr, with what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

database=""
if [ "${1:-}" = "--database" ]; then database="${2:?--database needs a name}"; fi

answers() { psql "$1" -Atqc 'select 1' >/dev/null 2>&1; }
log() { echo "ensure-postgres: $*" >&2; }

if ! command -v psql >/dev/null 2>&1; then
  log "psql is missing: install PostgreSQL (apt-get install postgresql) or set DATABASE_URL"
  exit 2
fi

# Prints the URL to use: the server's, or its database `$database` (created when missing).
found() {
  if [ -z "$database" ]; then echo "$1"; exit 0; fi
  if [ "$(psql "$1" -Atqc "select 1 from pg_database where datname = '$database'")" != 1 ]; then
    psql "$1" -qc "create database \"$database\"" >&2
  fi
  echo "${1%/*}/$database"; exit 0
}

if [ -n "${DATABASE_URL:-}" ] && answers "$DATABASE_URL"; then found "$DATABASE_URL"; fi

local_url="postgres://postgres@127.0.0.1:5432/postgres"
if answers "$local_url"; then found "$local_url"; fi

if command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql/*/main >/dev/null 2>&1; then
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  log "starting the local PostgreSQL $version cluster"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 2>&1 || true
  for _ in $(seq 1 30); do answers "$local_url" && found "$local_url"; sleep 0.5; done
fi

bindir=$(dirname "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1 || true)")
if [ ! -x "$bindir/initdb" ]; then
  log "no PostgreSQL answers and initdb is missing: install PostgreSQL (apt-get install postgresql) or set DATABASE_URL"
  exit 2
fi

dir="$PWD/.dev/pg"
port=55432
url="postgres://postgres@127.0.0.1:$port/postgres"
run_as=()
if [ "$(id -u)" = 0 ]; then
  # initdb refuses to run as root; use the postgres system user, creating one if needed.
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  run_as=(runuser -u postgres --)
  mkdir -p "$dir"; chown postgres "$dir"
fi
if [ ! -f "$dir/PG_VERSION" ]; then
  log "creating a throwaway cluster in $dir"
  "${run_as[@]}" "$bindir/initdb" -D "$dir" -U postgres --auth=trust >/dev/null
fi
if ! answers "$url"; then
  "${run_as[@]}" "$bindir/pg_ctl" -D "$dir" -l "$dir/server.log" -w \
    -o "-p $port -c listen_addresses=127.0.0.1 -k /tmp -c max_connections=200" start >&2
fi
answers "$url" || { log "the throwaway cluster did not start: see $dir/server.log"; exit 2; }
found "$url"
