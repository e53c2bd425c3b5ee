#!/usr/bin/env bash
# Run by compose/offline/build.sh before it builds this image: puts the tansu
# binary into bin/ (git-ignored). It is built on the host from crates.io,
# once, into .tools/tansu (about 11 minutes on two cores):
#
#   cargo install tansu --version 0.6.0 --locked --no-default-features \
#     --features postgres,dynostore --root .tools/tansu
#
# (`dynostore` brings the memory:// and s3:// storage engines.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
root=$(cd ../../.. && pwd)
TANSU_VERSION=0.6.0
tansu=$root/.tools/tansu/bin/tansu

if [[ ! -x $tansu ]] || [[ $("$tansu" --version 2>/dev/null) != *"$TANSU_VERSION"* ]]; then
  echo "tansu/prepare.sh: building tansu $TANSU_VERSION from crates.io into .tools/tansu (about 11 minutes)"
  cargo install tansu --version "$TANSU_VERSION" --locked --no-default-features \
    --features postgres,dynostore --root "$root/.tools/tansu"
fi
mkdir -p bin
cp -p "$tansu" bin/tansu
