#!/bin/sh
# The entrypoint of compose/offline/redis, after the official image's
# (docker-library/redis): options or a .conf file as the first argument run
# redis-server with them; redis-server started as root gets the working
# directory (/data) owned by redis and runs as that user. Everything else is
# executed as given.
set -e

# `docker run image --appendonly yes`, `docker run image /etc/redis.conf`.
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi

if [ "$1" = 'redis-server' ] && [ "$(id -u)" = '0' ]; then
  # Only what is not redis' already (a large volume is not walked).
  find . \! -user redis -exec chown redis:redis '{}' +
  # exec: the same process (PID 1), the same stdin.
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

# Files redis writes are its own only (the official image's umask), unless
# the container was given another umask.
um=$(umask)
if [ "$um" = '0022' ]; then
  umask 0077
fi

exec "$@"
