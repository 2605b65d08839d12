#!/bin/bash
# The official image's first start, in short: a cluster whose superuser is POSTGRES_USER, a
# database POSTGRES_DB (the user's name by default), the init scripts, then the server.
set -euo pipefail
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb --username="$user" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}") \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 -D "$PGDATA" >/dev/null
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/tmp" -w start >/dev/null
  run() { psql -v ON_ERROR_STOP=1 -h /tmp --username="$user" --no-password --quiet "$@"; }
  [ "$database" = postgres ] || run -d postgres -c "CREATE DATABASE \"$database\""
  for script in /docker-entrypoint-initdb.d/*.sql; do
    [ -e "$script" ] && run -d "$database" -f "$script"
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "PostgreSQL init process complete; ready for start up."
fi
if [ "$1" = postgres ]; then
  shift
  exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "$@"
fi
exec "$@"
