#!/usr/bin/env bash
# Runs a command with the services the tests need: dockerd, a Redis on the
# test port, and the offline task images. Starts only what is not already
# running, and stops on exit exactly what it started.
set -euo pipefail

TEST_REDIS_PORT="${HIVEMIND_TEST_REDIS_PORT:-6399}"
STATE="$(mktemp -d)"
started_dockerd=""
started_redis=""

cleanup() {
  if [ -n "$started_redis" ]; then
    redis-cli -p "$TEST_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  fi
  if [ -n "$started_dockerd" ]; then
    kill "$started_dockerd" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$started_dockerd" 2>/dev/null || break; sleep 1; done
  fi
  rm -rf "$STATE"
}
trap cleanup EXIT

need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "error: '$1' is not installed; run 'make deps' (apt-get install docker.io redis-server debootstrap busybox-static)" >&2
    exit 1
  }
}
need docker; need dockerd; need redis-server; need debootstrap

if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd (log: /var/log/hivemind-test-dockerd.log)"
  dockerd >/var/log/hivemind-test-dockerd.log 2>&1 &
  started_dockerd=$!
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "error: dockerd did not start" >&2; tail -20 /var/log/hivemind-test-dockerd.log >&2; exit 1; }
fi

if ! redis-cli -p "$TEST_REDIS_PORT" ping >/dev/null 2>&1; then
  redis-server --port "$TEST_REDIS_PORT" --bind 127.0.0.1 --databases 64 --save "" \
    --appendonly no --daemonize yes --dir "$STATE" >/dev/null
  started_redis=yes
  for _ in $(seq 1 50); do redis-cli -p "$TEST_REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

"$(dirname "$0")/build-images.sh"

export HIVEMIND_TEST_REDIS="redis://127.0.0.1:${TEST_REDIS_PORT}"
export HIVEMIND_REQUIRE_SERVICES=1
"$@"
