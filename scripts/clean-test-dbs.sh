#!/usr/bin/env bash
# Drops the databases that failed tests left behind (fantasy_test_*, fantasy_cli_*).
set -euo pipefail
url=${FANTASY_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
psql "$url" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'fantasy\_test\_%' OR datname LIKE 'fantasy\_cli\_%'" |
while read -r db; do
  psql "$url" -qc "DROP DATABASE \"$db\" WITH (FORCE)"
  echo "dropped $db"
done
