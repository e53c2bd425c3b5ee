#!/bin/sh
# The entrypoint of compose/offline/s3: runs the given command, except
#   server ...   MinIO's command (`server /data --console-address :9001`):
#                moto's S3 server on port 9000 instead (the data directory
#                and the console are ignored: moto keeps data in memory)
#   -...         options for moto's server (`-p 9100`)
# The server is PID 1 (exec) and stops on SIGTERM.
set -e

case "${1:-}" in
  server)
    set -- python3 -m moto.server -H 0.0.0.0 -p "${S3_PORT:-9000}"
    ;;
  -*)
    set -- python3 -m moto.server "$@"
    ;;
esac

exec "$@"
