#!/usr/bin/env bash
# Writes the stack's secrets, random, into compose/secrets/ (once: existing
# files are kept), for `docker compose` (compose/docker-compose.yml).
# For a Swarm, `--swarm` also creates them as Docker secrets
# (`docker secret create fantasy_<name>`), then the files may be deleted.
#
#   compose/make-secrets.sh [--swarm]
set -euo pipefail
cd "$(dirname "$0")"

names=(postgres_password redis_password minio_password jwt_secret grafana_admin_password)

# The folder is private to its owner; the files are readable by the
# containers' own users (Postgres' and our services' non-root users).
mkdir -p secrets
chmod 700 secrets
random() { head -c 48 /dev/urandom | base64 | tr -d '/+=\n' | head -c "$1"; }
write() {
  local file="secrets/$1"
  if [ -s "$file" ]; then
    echo "kept    $file"
  else
    (umask 022; printf '%s' "$2" >"$file")
    echo "created $file"
  fi
}
write minio_user "fantasy"
for name in "${names[@]}"; do
  # The JWT secret is an HS256 key: at least 32 bytes.
  write "$name" "$(random 40)"
done

if [ "${1:-}" = "--swarm" ]; then
  for name in minio_user "${names[@]}"; do
    if docker secret inspect "fantasy_$name" >/dev/null 2>&1; then
      echo "exists  secret fantasy_$name"
    else
      docker secret create "fantasy_$name" "secrets/$name" >/dev/null
      echo "created secret fantasy_$name"
    fi
  done
fi
