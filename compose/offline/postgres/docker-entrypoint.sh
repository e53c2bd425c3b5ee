#!/usr/bin/env bash
# The entrypoint of compose/offline/postgres, after the official image's
# (docker-library/postgres): on the first start with an empty PGDATA it runs
# initdb (POSTGRES_USER's password from POSTGRES_PASSWORD or
# POSTGRES_PASSWORD_FILE; host connections by scram-sha-256, or
# POSTGRES_HOST_AUTH_METHOD), creates POSTGRES_DB and runs
# /docker-entrypoint-initdb.d/*.sh|*.sql|*.sql.gz; then it execs the server,
# which becomes PID 1. Started as root it first owns PGDATA to postgres and
# re-executes itself as that user (setpriv).
set -Eeuo pipefail

log() { printf '%s [entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# file_env VAR [DEFAULT]: VAR from the environment or from the file named by
# VAR_FILE (a Docker secret), not both.
file_env() {
  local var=$1 def=${2:-}
  local file_var="${var}_FILE"
  local val=$def
  if [[ -n ${!var:-} && -n ${!file_var:-} ]]; then
    die "both $var and $file_var are set (only one may be)"
  fi
  if [[ -n ${!var:-} ]]; then
    val=${!var}
  elif [[ -n ${!file_var:-} ]]; then
    [[ -r ${!file_var} ]] || die "$file_var: cannot read ${!file_var}"
    val=$(<"${!file_var}")
  fi
  export "$var"="$val"
  unset "$file_var"
}

# `docker run image -c shared_buffers=1GB`: options for postgres.
if [[ ${1:-} == -* ]]; then
  set -- postgres "$@"
fi

if [[ ${1:-} != postgres ]]; then
  exec "$@"
fi

PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA

if [[ $(id -u) == 0 ]]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chmod 00700 "$PGDATA"
  chmod 03775 /var/run/postgresql
  # Only what is not postgres' already: a large data directory is not walked
  # on every start.
  find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
  chown postgres:postgres /var/run/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$(readlink -f "${BASH_SOURCE[0]}")" "$@"
fi

file_env POSTGRES_PASSWORD
file_env POSTGRES_USER postgres
file_env POSTGRES_DB "$POSTGRES_USER"
file_env POSTGRES_INITDB_ARGS
POSTGRES_HOST_AUTH_METHOD=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}

if [[ ! -s $PGDATA/PG_VERSION ]]; then
  if [[ -z $POSTGRES_PASSWORD && $POSTGRES_HOST_AUTH_METHOD != trust ]]; then
    die "the database is uninitialized and no password is set: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE (or POSTGRES_HOST_AUTH_METHOD=trust, which lets anyone in)"
  fi
  mkdir -p "$PGDATA"
  chmod 00700 "$PGDATA" 2>/dev/null || true

  log "initializing the database in $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)"
  # The password goes through a file descriptor: never on a command line.
  # Local (socket) connections are trusted, as in the official image (the
  # health check, the init scripts); every TCP connection, even from
  # localhost, needs the password.
  # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of options
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
    --auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD" \
    $POSTGRES_INITDB_ARGS >/dev/null
  printf '\n# Any address (the container network), by %s (docker-entrypoint.sh).\nhost all all all %s\n' \
    "$POSTGRES_HOST_AUTH_METHOD" "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"

  # A temporary server on the socket only, for the database and the scripts.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start >/dev/null
  psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --no-password)
  if [[ $POSTGRES_DB != postgres ]]; then
    # (psql substitutes :'db' and :"db" in what it reads, not in -c.)
    exists=$("${psql[@]}" --dbname postgres -tA --set db="$POSTGRES_DB" <<<"SELECT 1 FROM pg_database WHERE datname = :'db';")
    if [[ -z $exists ]]; then
      "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";' >/dev/null
    fi
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    [[ -e $f ]] || continue
    case $f in
      *.sh)
        # shellcheck source=/dev/null
        if [[ -x $f ]]; then log "running $f"; "$f"; else log "sourcing $f"; . "$f"; fi ;;
      *.sql) log "running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
      *.sql.gz) log "running $f"; gunzip -c "$f" | "${psql[@]}" --dbname "$POSTGRES_DB" ;;
      *) log "ignoring $f" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  log "initialized; starting the server"
fi

unset POSTGRES_PASSWORD
exec "$@"
