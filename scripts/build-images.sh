#!/usr/bin/env bash
# Builds the stack's images on a host that cannot pull from a registry:
#
#   - the release binaries, built here with cargo (Debian 12's glibc, the
#     same as the runtime images'; zlib linked statically), put in docker/bin/;
#   - base images made from Debian's packages (docker/bases.sh);
#   - every CPU target of docker/Dockerfile (fantasy/<target>:$TAG), with
#     BINARIES=host, ORT=host (ONNX Runtime from the PyPI wheel, as
#     scripts/setup.sh extracted it) and the local runtime base as build
#     arguments: the runtime
#     stages (user 65532, files, ONNX Runtime, HEALTHCHECK, labels) are the
#     file's own, the ones users get;
#   - the infrastructure images standing in for the ones the stack pulls
#     (compose/offline/build.sh: Postgres, Redis, HAProxy, ...).
#
#   scripts/build-images.sh                 all of it
#   SKIP_CARGO=1 scripts/build-images.sh    reuse target/release
#   TAG=dev scripts/build-images.sh         another tag (default latest)
#
# Docker's classic builder (there is no buildx here) builds every stage
# that comes before the target, used or not; the stages that compile Rust
# in the rust image (chef, planner, builder, binaries-builder) cannot run
# here, nor do the ones fetching ONNX Runtime from PyPI in a container (a
# build container here does not trust the registry proxy's certificate), so
# the Dockerfile it is given leaves exactly those out. Prints each
# image's size at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${TAG:-latest}
BASES=${BASES:-fantasy-base}
bins=(predictor fanout collector trainer fantasy)
step() { printf '\033[1mbuild-images:\033[0m %s\n' "$*" >&2; }

if [ -z "${SKIP_CARGO:-}" ]; then
  step "cargo build --release (${bins[*]})"
  packages=()
  for bin in "${bins[@]}"; do packages+=(-p "$bin"); done
  LIBZ_SYS_STATIC=1 cargo build --release --locked "${packages[@]}"
fi
mkdir -p docker/bin docker/ort
for bin in "${bins[@]}"; do
  install -m 0755 "target/release/$bin" "docker/bin/$bin"
done
# ONNX Runtime as scripts/setup.sh extracted it from the PyPI wheel (a
# build container may not reach PyPI: a proxy's certificate, no network).
bash scripts/setup.sh >/dev/null
rm -rf docker/ort/*
cp -a .tools/onnxruntime/lib/. docker/ort/

step "base images from Debian's packages (docker/bases.sh)"
bash docker/bases.sh

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# docker/Dockerfile without the Rust builder's stages: a stage runs from its
# FROM line to the next one.
awk '
  /^FROM / { skip = ($NF == "chef" || $NF == "planner" || $NF == "builder" || $NF == "binaries-builder" || $NF == "ort-fetch" || $NF == "ort-cpu-pypi" || $NF == "ort-gpu") }
  !skip
' docker/Dockerfile >"$tmp/Dockerfile"
for stage in chef planner builder binaries-builder ort-fetch ort-cpu-pypi ort-gpu; do
  if grep -qE "^FROM .* AS $stage\$" "$tmp/Dockerfile"; then
    step "could not leave the $stage stage out"; exit 1
  fi
done

for target in "${bins[@]}"; do
  step "fantasy/$target:$TAG"
  DOCKER_BUILDKIT=0 docker build --quiet -f "$tmp/Dockerfile" --target "$target" \
    --build-arg BINARIES=host --build-arg ORT=host \
    --build-arg RUNTIME_IMAGE="$BASES/runtime:bookworm" \
    -t "fantasy/$target:$TAG" . >/dev/null
done

if [ -f compose/offline/build.sh ]; then
  step "infrastructure images (compose/offline/build.sh)"
  bash compose/offline/build.sh
fi

step "sizes"
docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' |
  grep -E "^(fantasy|fantasy-offline|$BASES)/" | sort
