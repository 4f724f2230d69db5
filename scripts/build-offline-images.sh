#!/usr/bin/env bash
# Builds every image a compose site needs without any registry:
#   1. the task images (scripts/build-images.sh): the worker starts task containers
#      through the host's dockerd, so they must exist on the host;
#   2. a base image for the Dockerfile: a debootstrap Debian root with python3,
#      python3-venv and pip (HIVEMIND_BASE_IMAGE, default hivemind-base-python:bookworm);
#   3. a Redis image: a debootstrap root with redis-server
#      (HIVEMIND_REDIS_IMAGE, default hivemind-redis:bookworm);
#   4. a wheelhouse under build/wheelhouse (the dependencies and build backend): pip wheel
#      in the base image, with the host's network and CA bundle (HIVEMIND_CA_BUNDLE),
#      since build containers here do not trust the CA that PyPI is reached through;
#   5. the site image: docker build --network none --build-arg BASE_IMAGE=... -t HIVEMIND_SITE_IMAGE .
#      (pip installs from the wheelhouse with --no-index).
# Root trees are cached as tarballs under HIVEMIND_IMAGE_CACHE (/var/cache/hivemind),
# so a rebuild after a dockerd reset takes seconds. --force rebuilds everything.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE="${HIVEMIND_BASE_IMAGE:-hivemind-base-python:bookworm}"
REDIS_IMAGE="${HIVEMIND_REDIS_IMAGE:-hivemind-redis:bookworm}"
SITE_IMAGE="${HIVEMIND_SITE_IMAGE:-hivemind-site:latest}"
CACHE="${HIVEMIND_IMAGE_CACHE:-/var/cache/hivemind}"
SUITE="${HIVEMIND_DEBIAN_SUITE:-bookworm}"
MIRROR="${HIVEMIND_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CA_BUNDLE="${HIVEMIND_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
WHEELHOUSE=build/wheelhouse
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
step() { echo "== $*"; }
mkdir -p "$CACHE"

# debootstrap_tarball NAME PACKAGES: a cached minbase root with PACKAGES installed.
debootstrap_tarball() {
  local tarball="$CACHE/$1-$SUITE.tar" packages="$2"
  if [ ! -s "$tarball" ] || [ $FORCE = 1 ]; then
    command -v debootstrap >/dev/null || { echo "error: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
    local root; root=$(mktemp -d)
    debootstrap --variant=minbase --include="$packages" "$SUITE" "$root" "$MIRROR" >/dev/null
    rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
    "${3:-true}" "$root"
    tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  echo "$tarball"
}

# Redis writes its append-only file under /data as the redis user.
redis_data_dir() { mkdir -p "$1/data"; chroot "$1" chown redis:redis /data; }

step "task images"
if [ $FORCE = 1 ]; then scripts/build-images.sh --force; else scripts/build-images.sh; fi

step "base image $BASE_IMAGE"
if ! have_image "$BASE_IMAGE" || [ $FORCE = 1 ]; then
  # wireguard-go, wireguard-tools, iproute2: the bridge's tunnel (docker-compose.tunnel.yml, docs/tunnel.md).
  tarball=$(debootstrap_tarball base-python-wg python3,python3-venv,python3-pip,ca-certificates,wireguard-go,wireguard-tools,iproute2)
  docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' "$tarball" "$BASE_IMAGE" >/dev/null
  echo "built $BASE_IMAGE"
fi

step "redis image $REDIS_IMAGE"
if ! have_image "$REDIS_IMAGE" || [ $FORCE = 1 ]; then
  tarball=$(debootstrap_tarball redis redis-server redis_data_dir)
  docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'USER redis' -c 'WORKDIR /data' -c 'EXPOSE 6379' \
    -c 'CMD ["redis-server", "--protected-mode", "no", "--dir", "/data"]' "$tarball" "$REDIS_IMAGE" >/dev/null
  echo "built $REDIS_IMAGE"
fi

step "wheelhouse $WHEELHOUSE"
# The project's dependencies and its build backend, as wheels; the project itself is
# built from the source in the image, so the wheelhouse stays good until pyproject.toml
# changes. pip runs in the base image itself, so environment markers match its Python
# (bookworm's 3.11.2 needs wheels a newer 3.11 does not). It uses the host's network
# and CA bundle (build containers here lack the CA that PyPI is reached through).
if [ $FORCE = 1 ] || [ ! -f "$WHEELHOUSE/.built" ] || [ pyproject.toml -nt "$WHEELHOUSE/.built" ]; then
  rm -rf "$WHEELHOUSE"; mkdir -p "$WHEELHOUSE"
  docker run --rm --network host --user "$(id -u):$(id -g)" -e HOME=/tmp -e PIP_CERT=/ca.crt \
    -e PIP_DISABLE_PIP_VERSION_CHECK=1 -v "$CA_BUNDLE:/ca.crt:ro" -v "$PWD/pyproject.toml:/src/pyproject.toml:ro" \
    -v "$PWD/$WHEELHOUSE:/wheelhouse" "$BASE_IMAGE" python3 -c '
import subprocess, sys, tomllib
project = tomllib.load(open("/src/pyproject.toml", "rb"))
wanted = project["project"]["dependencies"] + project["build-system"]["requires"]
for extra in ("gpu", "flower"):
    wanted += project["project"]["optional-dependencies"][extra]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", "/wheelhouse", *wanted]))'
  touch "$WHEELHOUSE/.built"
fi
echo "$(ls "$WHEELHOUSE"/*.whl | wc -l) wheels"

step "site image $SITE_IMAGE"
docker build -q --network none --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$SITE_IMAGE" . >/dev/null
echo "built $SITE_IMAGE from $BASE_IMAGE"
