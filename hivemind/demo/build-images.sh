#!/usr/bin/env bash
# Builds the task images offline (no registry needed): a Debian root made by
# debootstrap with python3, and a tiny busybox image for tests. Images already
# present are kept unless --force is given. A tarball cache under
# ${HIVEMIND_IMAGE_CACHE:-/var/cache/hivemind} makes rebuilds after a dockerd
# reset take seconds.
set -euo pipefail

TASK_IMAGE="${HIVEMIND_TASK_IMAGE:-hivemind-task-python:bookworm}"
BUSYBOX_IMAGE="${HIVEMIND_BUSYBOX_IMAGE:-hivemind-busybox:latest}"
CACHE="${HIVEMIND_IMAGE_CACHE:-/var/cache/hivemind}"
SUITE="${HIVEMIND_DEBIAN_SUITE:-bookworm}"
MIRROR="${HIVEMIND_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
mkdir -p "$CACHE"

# A non-root user (uid 1000) and a /workspace it owns, so the hardened
# container can write its workspace without any capability.
add_task_user() {
  local root="$1"
  mkdir -p "$root/workspace" "$root/tmp"
  grep -q '^task:' "$root/etc/passwd" 2>/dev/null || \
    echo 'task:x:1000:1000:task:/workspace:/bin/sh' >> "$root/etc/passwd"
  grep -q '^task:' "$root/etc/group" 2>/dev/null || echo 'task:x:1000:' >> "$root/etc/group"
  chown 1000:1000 "$root/workspace"
  chmod 1777 "$root/tmp"
}

build_busybox() {
  if have_image "$BUSYBOX_IMAGE" && [ $FORCE = 0 ]; then return; fi
  local root; root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/etc"
  cp "$(command -v busybox)" "$root/bin/busybox"
  for app in sh echo cat ls sleep head yes dd mkdir touch id wc true false env printf kill seq; do
    ln -s busybox "$root/bin/$app"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
  echo 'root:x:0:' > "$root/etc/group"
  add_task_user "$root"
  tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' - "$BUSYBOX_IMAGE" >/dev/null
  rm -rf "$root"
  echo "built $BUSYBOX_IMAGE"
}

build_task_image() {
  if have_image "$TASK_IMAGE" && [ $FORCE = 0 ]; then return; fi
  local tarball="$CACHE/task-python-$SUITE.tar"
  if [ ! -s "$tarball" ] || [ $FORCE = 1 ]; then
    local root; root=$(mktemp -d)
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
      "$SUITE" "$root" "$MIRROR" >/dev/null
    add_task_user "$root"
    rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
    tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'WORKDIR /workspace' "$tarball" "$TASK_IMAGE" >/dev/null
  echo "built $TASK_IMAGE"
}

build_busybox
build_task_image
