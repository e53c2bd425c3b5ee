#!/bin/sh
# The entrypoint of compose/offline/haproxy, after the official image's
# (docker-library/haproxy): options as the first argument run haproxy with
# them; haproxy runs in master-worker mode (-W: a reload is SIGUSR2 to PID 1)
# in the foreground (-db), logging to stdout.
set -e

if [ "${1#-}" != "$1" ]; then
  set -- haproxy "$@"
fi

if [ "$1" = 'haproxy' ]; then
  shift
  set -- haproxy -W -db "$@"
fi

exec "$@"
