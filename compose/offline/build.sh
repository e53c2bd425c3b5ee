#!/usr/bin/env bash
# Builds the offline infrastructure images (compose/offline/README.md): the
# Debian base images first (docker/bases.sh, which skips those that exist),
# then every compose/offline/<name>/Dockerfile as fantasy-offline/<name>:latest,
# and prints their sizes.
#
#   compose/offline/build.sh                  # all of them
#   compose/offline/build.sh redis postgres   # some (the bases all the same)
#   compose/offline/build.sh --rebuild        # the bases again, no build cache
#
# An image whose folder has an executable prepare.sh gets it run first, to
# fetch what its build copies in: s3/prepare.sh downloads moto's wheels on
# the host (containers that cannot reach PyPI still build).
#
# Environment: PREFIX and TAG of the bases (as docker/bases.sh: fantasy-base,
# bookworm), IMAGE_PREFIX of the images (fantasy-offline).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
PREFIX=${PREFIX:-fantasy-base}
TAG=${TAG:-bookworm}
IMAGE_PREFIX=${IMAGE_PREFIX:-fantasy-offline}
export PREFIX TAG

die() { echo "build.sh: $*" >&2; exit 1; }

rebuild=0
names=()
while (($#)); do
  case $1 in
    --rebuild) rebuild=1 ;;
    -h | --help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (--rebuild, --help)" ;;
    *)
      [[ -f $here/$1/Dockerfile ]] || die "no compose/offline/$1/Dockerfile"
      names+=("$1")
      ;;
  esac
  shift
done
if ((${#names[@]} == 0)); then
  for dockerfile in "$here"/*/Dockerfile; do
    names+=("$(basename "$(dirname "$dockerfile")")")
  done
fi

# 1. The bases.
bases_args=()
if ((rebuild)); then bases_args+=(--rebuild); fi
"$root/docker/bases.sh" "${bases_args[@]}"

# The legacy builder (no buildx installed, or DOCKER_BUILDKIT=0) keeps the
# container of a failed step unless told otherwise.
build_args=()
if [[ ${DOCKER_BUILDKIT:-} == 0 ]] || ! docker buildx version >/dev/null 2>&1; then
  build_args+=(--force-rm)
fi
if ((rebuild)); then build_args+=(--no-cache); fi

# 2. The images, each FROM the base its Dockerfile names (ARG BASE), after
# its prepare.sh if it has one. One that fails does not stop the others.
failed=()
for name in "${names[@]}"; do
  dockerfile=$here/$name/Dockerfile
  if [[ -x $here/$name/prepare.sh ]]; then
    echo "==> $name/prepare.sh"
    if ! "$here/$name/prepare.sh"; then
      echo "==> $name/prepare.sh failed: $name not built" >&2
      failed+=("$name")
      continue
    fi
  fi
  base=$(sed -n 's/^ARG BASE=//p' "$dockerfile" | head -n1)
  args=("${build_args[@]}")
  if [[ $base == fantasy-base/* ]]; then
    # The base of the same name under PREFIX and TAG.
    base_name=${base#*/}
    base=$PREFIX/${base_name%%:*}:$TAG
    args+=(--build-arg "BASE=$base")
  fi
  echo "==> building $IMAGE_PREFIX/$name:latest${base:+ (FROM $base)}"
  if ! docker build "${args[@]}" -f "$dockerfile" -t "$IMAGE_PREFIX/$name:latest" "$here/$name"; then
    echo "==> building $IMAGE_PREFIX/$name:latest failed" >&2
    failed+=("$name")
  fi
done

echo
echo "Images:"
for name in debian runtime python; do
  docker image ls --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' "$PREFIX/$name:$TAG"
done
for name in "${names[@]}"; do
  docker image ls --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' "$IMAGE_PREFIX/$name:latest"
done
if ((${#failed[@]})); then
  echo "build.sh: not built: ${failed[*]}" >&2
  exit 1
fi
