#!/usr/bin/env bash
# Run by compose/offline/build.sh before it builds this image: downloads
# moto[server] (the version the Dockerfile pins) and its dependencies as
# wheels into wheels/ (git-ignored), for the image's Python (CPython 3.11,
# glibc 2.36, x86_64), with this host's pip. The build then installs them
# without asking PyPI: containers that cannot reach it (no route, or a proxy
# that intercepts TLS with a CA only the host trusts) still build. Without
# pip here, or on another architecture, wheels/ stays empty and the build
# asks PyPI itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

version=$(sed -n 's/^ARG MOTO_VERSION=//p' Dockerfile)
[[ -n $version ]] || { echo "s3/prepare.sh: no ARG MOTO_VERSION in Dockerfile" >&2; exit 1; }
if [[ -e wheels/moto-$version-py3-none-any.whl ]]; then
  exit 0
fi
if ! python3 -m pip --version >/dev/null 2>&1 || [[ $(uname -m) != x86_64 ]]; then
  echo "s3/prepare.sh: no pip here (or not x86_64): the build downloads moto from PyPI itself"
  exit 0
fi

echo "s3/prepare.sh: downloading moto[server]==$version and its dependencies into wheels/"
rm -f wheels/*.whl
# pip takes each manylinux tag literally: every glibc up to bookworm's 2.36.
platforms=()
for glibc in $(seq 36 -1 17); do
  platforms+=(--platform "manylinux_2_${glibc}_x86_64")
done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
if ! python3 -m pip download --quiet --disable-pip-version-check --dest wheels \
  --only-binary=:all: --python-version 3.11 --implementation cp "${platforms[@]}" \
  "moto[server]==$version"; then
  rm -f wheels/*.whl
  echo "s3/prepare.sh: pip download failed: the build tries PyPI itself" >&2
fi
