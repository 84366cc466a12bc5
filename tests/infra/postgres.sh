#!/usr/bin/env bash
# Start a throwaway PostgreSQL 15 cluster for the tests, on 127.0.0.1:${PGPORT:-54329}.
# Installs the server from Debian's packages if it is missing. Prints the URL to use.
set -euo pipefail
port=${PGPORT:-54329}
dir=${PGDATA_DIR:-/tmp/releasewarden-pg}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
if [[ -z $bin || ! -x $bin/initdb ]]; then
  echo "installing PostgreSQL from Debian's packages..." >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
fi
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [[ $(id -u) == 0 ]] && ! id postgres >/dev/null 2>&1; then
  useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
fi
if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
  if [[ ! -f $dir/PG_VERSION ]]; then
    mkdir -p "$dir"; [[ $(id -u) == 0 ]] && chown postgres "$dir"
    as_pg "$bin/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >&2
fi
as_pg "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -tc "SELECT 1 FROM pg_database WHERE datname='canary_test'" \
  | grep -q 1 || as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres canary_test
echo "postgresql://postgres@127.0.0.1:$port/canary_test"
