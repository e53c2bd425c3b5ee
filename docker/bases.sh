#!/usr/bin/env bash
# Base images made from Debian's own packages, for hosts that cannot pull
# from a container registry (only Debian's apt mirrors are reachable):
#
#   docker/bases.sh              # builds the images that are missing
#   docker/bases.sh --rebuild    # builds all three again
#
# Each image is `mmdebstrap --variant=minbase bookworm` (plus packages)
# piped into `docker import`:
#
#   fantasy-base/debian:bookworm   minbase + ca-certificates: the base that
#                                  Dockerfiles build FROM (apt works in it)
#   fantasy-base/runtime:bookworm  stands in for gcr.io/distroless/cc-debian12:
#                                  nonroot: glibc, libgcc-s1, libstdc++6,
#                                  libgomp1, libssl3, ca-certificates, tzdata,
#                                  netbase, user and group nonroot (65532),
#                                  USER 65532:65532, WORKDIR /home/nonroot; no
#                                  apt, no dpkg, no perl; a shell (dash, as
#                                  /bin/sh) and coreutils remain
#   fantasy-base/python:bookworm   stands in for python:3.11-slim-bookworm:
#                                  python3 (3.11), pip, `python` and `pip` on
#                                  PATH, pip may install system-wide
#
# Use them through the build arguments of docker/Dockerfile:
#
#   docker build -f docker/Dockerfile \
#     --build-arg PYTHON_IMAGE=fantasy-base/python:bookworm \
#     --build-arg RUNTIME_IMAGE=fantasy-base/runtime:bookworm ...
#
# Needs root (mmdebstrap's root mode), mmdebstrap, dpkg and a Docker Engine.
# Environment: SUITE (bookworm), PREFIX (fantasy-base), TAG (the suite).
# mmdebstrap honours http_proxy / https_proxy. EXTRA_CA_CERTS=FILE (PEM, one
# or more certificates) adds a certificate authority to every image's trust
# store, for networks whose proxy intercepts TLS (pip in a build then
# reaches PyPI through it); the images then trust it too: keep them local.
# shellcheck disable=SC2016  # mmdebstrap's hook shell expands "$1" (the chroot)
set -euo pipefail

SUITE=${SUITE:-bookworm}
PREFIX=${PREFIX:-fantasy-base}
TAG=${TAG:-$SUITE}
PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
self=$(readlink -f "${BASH_SOURCE[0]}")

die() { echo "bases.sh: $*" >&2; exit 1; }

usage() {
  cat <<EOF
usage: $0 [--rebuild] [debian|runtime|python ...]

Builds ${PREFIX}/{debian,runtime,python}:${TAG} from Debian ${SUITE} with
mmdebstrap and docker import. An image that already exists is kept unless
--rebuild is given. Names select which images to build (default: all).
EOF
}

# Options every image shares:
# - merged /usr through the usr-is-merged package, not usrmerge (which would
#   pull in perl, 50 MB);
# - no Recommends (mmdebstrap's default);
# - no documentation, manual pages or translations: the dpkg options stay in
#   the image (/etc/dpkg/dpkg.cfg.d/99mmdebstrap), so packages that a
#   Dockerfile installs later leave them out too (copyright files stay);
# - the package lists and the apt cache are removed (mmdebstrap's cleanup).
common=(
  --mode=root
  --variant=minbase
  --format=tar
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/lintian/*'
  --dpkgopt='path-exclude=/usr/share/linda/*'
  # The same apt settings as Docker's official debian images: no .deb files
  # or binary caches left behind, no translations downloaded.
  --customize-hook='printf "%s\n" "DPkg::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true\"; };" "APT::Update::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true\"; };" "Dir::Cache::pkgcache \"\";" "Dir::Cache::srcpkgcache \"\";" > "$1/etc/apt/apt.conf.d/docker-clean"'
  --customize-hook='echo "Acquire::Languages \"none\";" > "$1/etc/apt/apt.conf.d/docker-no-languages"'
  # What a container does not need: logs, caches and the machine id of the
  # build, backup copies of the user databases.
  # (apt's binary caches go explicitly: with the settings above `apt-get
  # clean`, mmdebstrap's cleanup, no longer finds them.)
  --customize-hook='rm -rf "$1"/var/cache/apt/*.bin "$1"/var/log/apt/* "$1"/var/log/dpkg.log "$1"/var/log/alternatives.log "$1"/var/log/bootstrap.log "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old "$1"/etc/passwd- "$1"/etc/group- "$1"/etc/shadow- "$1"/etc/gshadow-'
  --customize-hook=': > "$1/etc/machine-id"; rm -f "$1/var/lib/dbus/machine-id"'
)

# The extra certificate authority goes in before each image's own hooks run
# (the runtime's pruning keeps the CA bundle, not the tools that make it).
if [[ -n ${EXTRA_CA_CERTS:-} ]]; then
  [[ -r $EXTRA_CA_CERTS ]] || die "EXTRA_CA_CERTS: cannot read $EXTRA_CA_CERTS"
  common+=(
    --customize-hook="install -m 0644 \"$EXTRA_CA_CERTS\" \"\$1/usr/local/share/ca-certificates/extra-ca.crt\""
    --customize-hook='chroot "$1" update-ca-certificates >/dev/null'
  )
fi

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# make_image TAG INCLUDES [mmdebstrap options...] -- [docker import --change values...]
make_image() {
  local tag=$1 includes=$2
  shift 2
  local -a opts=() changes=()
  while (($#)) && [[ $1 != -- ]]; do opts+=("$1"); shift; done
  (($#)) && shift
  local change
  for change in "$@"; do changes+=(--change "$change"); done

  if image_exists "$tag" && ((!rebuild)); then
    echo "==> $tag exists (--rebuild builds it again)"
    return 0
  fi
  echo "==> building $tag (mmdebstrap $SUITE, +$includes)"
  # Imported without a tag; tagged only once mmdebstrap and the import both
  # succeeded, so a failed build never leaves a half-made image under the tag.
  local id
  if ! id=$(mmdebstrap "${common[@]}" "${opts[@]}" --include="$includes" "$SUITE" - \
    | docker import "${changes[@]}" \
      --message "mmdebstrap --variant=minbase $SUITE --include=$includes" - ); then
    [[ -n ${id:-} ]] && docker image rm "$id" >/dev/null 2>&1
    die "building $tag failed"
  fi
  local old
  old=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
  docker tag "$id" "$tag"
  # The image this one replaces, unless something still uses it.
  if [[ -n $old && $old != "$id" ]]; then
    docker image rm "$old" >/dev/null 2>&1 || true
  fi
}

build_debian() {
  make_image "$PREFIX/debian:$TAG" ca-certificates \
    -- \
    "ENV PATH=$PATH_ENV" \
    'CMD ["bash"]'
}

# The runtime: the packages a distroless cc image carries, installed by dpkg
# (their maintainer scripts make the user databases, the CA bundle and the
# time zone), then prune_runtime purges everything else, apt and dpkg
# included.
runtime_keep=(
  base-files base-passwd netbase gcc-12-base libc6 libgcc-s1 libstdc++6
  libgomp1 libssl3 ca-certificates tzdata
  # a shell: dash is /bin/sh; coreutils for `docker exec` debugging (and
  # their libraries)
  dash coreutils libacl1 libattr1 libselinux1 libpcre2-8-0 libgmp10
)

# prune_runtime ROOT: purges every package but runtime_keep from the file
# system at ROOT, with the host's dpkg (`--root`), so that dpkg can remove
# itself too. Their removal scripts are dropped first: they call tools
# (debconf, update-rc.d, pam-auth-update) that are being removed as well;
# dpkg alone removes the files. The dpkg status database stays and lists
# exactly what is left (for image scanners).
prune_runtime() {
  local root=$1 pkg
  local -a keep=() purge=()
  for pkg in "${runtime_keep[@]}"; do keep+=(-e "$pkg"); done
  mapfile -t purge < <(dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${Package}\n' \
    | grep -vxF "${keep[@]}")
  ((${#purge[@]})) || return 0
  for pkg in "${purge[@]}"; do
    rm -f "$root/var/lib/dpkg/info/$pkg".{prerm,postrm} "$root/var/lib/dpkg/info/$pkg":*.{prerm,postrm}
  done
  dpkg --root="$root" --force-depends --force-remove-essential --force-remove-protected \
    --purge "${purge[@]}" >/dev/null 2>"$root/tmp/purge.log" || { cat "$root/tmp/purge.log" >&2; return 1; }
  # What the purged packages' install scripts made and their removal
  # scripts would have removed: alternatives, PAM and init configuration.
  find "$root" -xdev -lname '/etc/alternatives/*' -delete
  rm -rf "$root"/etc/alternatives "$root"/var/lib/dpkg/alternatives \
    "$root"/etc/pam.d "$root"/etc/security "$root"/etc/init.d "$root"/etc/rc?.d \
    "$root"/etc/systemd "$root"/usr/lib/systemd "$root"/etc/logrotate.d "$root"/etc/cron.daily \
    "$root"/etc/default "$root"/etc/skel "$root"/etc/apt "$root"/etc/dpkg \
    "$root"/etc/ld.so.conf.d "$root"/var/lib/apt "$root"/var/cache/apt "$root"/var/cache/debconf \
    "$root"/var/cache/ldconfig "$root"/var/lib/pam "$root"/var/lib/systemd "$root"/var/log/* \
    "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/locale "$root"/usr/share/info \
    "$root"/usr/share/common-licenses "$root"/usr/share/lintian "$root"/usr/share/pam* \
    "$root"/usr/share/debconf "$root"/usr/share/perl5 \
    "$root"/var/lib/dpkg/info/*.md5sums "$root"/var/lib/dpkg/*-old "$root"/var/lib/dpkg/updates/* \
    "$root"/etc/passwd- "$root"/etc/group- "$root"/etc/shadow- "$root"/etc/gshadow- \
    "$root"/tmp/purge.log
  # glibc's iconv modules (8 MB: nothing here converts character sets) and
  # the leap-second time zones (`right/`, 2 MB).
  rm -rf "$root"/usr/lib/x86_64-linux-gnu/gconv "$root"/usr/share/zoneinfo/right
}

build_runtime() {
  make_image "$PREFIX/runtime:$TAG" \
    ca-certificates,tzdata,netbase,libc6,libgcc-s1,libstdc++6,libgomp1,libssl3 \
    --customize-hook='chroot "$1" groupadd --gid 65532 nonroot && chroot "$1" useradd --uid 65532 --gid 65532 --no-create-home --home-dir /home/nonroot --shell /usr/sbin/nologin nonroot 2>/dev/null && install -d -m 0700 -o 65532 -g 65532 "$1/home/nonroot"' \
    --customize-hook="\"$self\" --prune-runtime \"\$1\"" \
    --skip=cleanup/apt,cleanup/mmdebstrap \
    -- \
    "ENV PATH=$PATH_ENV" \
    'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    'USER 65532:65532' \
    'WORKDIR /home/nonroot'
}

# python3 of bookworm (3.11) with pip; `python` is python-is-python3's link.
# pip may install into /usr/local (as in the python:*-slim images, which have
# no EXTERNALLY-MANAGED marker): the marker is removed.
build_python() {
  make_image "$PREFIX/python:$TAG" \
    ca-certificates,python3,python3-pip,python-is-python3 \
    --customize-hook='rm -f "$1"/usr/lib/python3.*/EXTERNALLY-MANAGED' \
    --customize-hook='[ -e "$1/usr/bin/pip" ] || ln -s pip3 "$1/usr/bin/pip"' \
    --customize-hook='chroot "$1" python --version && chroot "$1" pip --version' \
    -- \
    "ENV PATH=$PATH_ENV" \
    'ENV LANG=C.UTF-8' \
    'ENV PIP_DISABLE_PIP_VERSION_CHECK=1' \
    'CMD ["python3"]'
}

# --- main ------------------------------------------------------------------------

rebuild=0
selected=()
while (($#)); do
  case $1 in
    --rebuild) rebuild=1 ;;
    -h | --help) usage; exit 0 ;;
    # Internal: mmdebstrap's customize hook for the runtime image.
    --prune-runtime) prune_runtime "$2"; exit ;;
    debian | runtime | python) selected+=("$1") ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
((${#selected[@]})) || selected=(debian runtime python)

((EUID == 0)) || die "run as root (mmdebstrap's root mode builds the file systems)"
if ! command -v mmdebstrap >/dev/null && command -v apt-get >/dev/null; then
  echo "bases.sh: installing mmdebstrap from Debian" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null; } ||
    die "could not install mmdebstrap with apt-get"
fi
for tool in mmdebstrap docker dpkg; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done
docker info >/dev/null 2>&1 || die "cannot reach the Docker Engine"
[[ -d /usr/share/mmdebstrap/hooks/merged-usr ]] \
  || die "mmdebstrap's merged-usr hook is missing (/usr/share/mmdebstrap/hooks/merged-usr)"

for name in "${selected[@]}"; do
  "build_$name"
done

echo
echo "Images:"
for name in "${selected[@]}"; do
  docker image ls --format '  {{.Repository}}:{{.Tag}}  {{.Size}}  ({{.ID}}, {{.CreatedSince}})' \
    "$PREFIX/$name:$TAG"
done
