#!/usr/bin/env bash
# Boots the compose site for real with the offline-built images, creates a user and the
# site's worker account with the CLI inside the nodepool container, submits
# examples/cpu_task through the CLI against the published Node Pool port, fetches its
# result zip and checks it, checks Flower's auth, then tears everything down (down -v).
#
# Runs as its own compose project on free host ports, with its own env file, so it
# leaves a site already running here (and its .env) alone. `make compose-smoke`.
set -euo pipefail
cd "$(dirname "$0")/.."

SITE_IMAGE="${HIVEMIND_SITE_IMAGE:-hivemind-site:latest}"
REDIS_IMAGE="${HIVEMIND_REDIS_IMAGE:-hivemind-redis:bookworm}"
HIVEMIND="${HIVEMIND:-.venv/bin/hivemind}"
BOOT_TIMEOUT="${BOOT_TIMEOUT:-240}"
PROJECT="hivemind-smoke-$$"
say() { echo "[compose-smoke] $*"; }

if docker-compose version >/dev/null 2>&1; then COMPOSE=(docker-compose)
elif docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
else echo "error: neither docker-compose nor 'docker compose' is installed (apt-get install docker-compose)" >&2; exit 1
fi
[ -x "$HIVEMIND" ] || { echo "error: $HIVEMIND not found: run 'make venv' first" >&2; exit 1; }

say "building the images offline"
HIVEMIND_SITE_IMAGE="$SITE_IMAGE" HIVEMIND_REDIS_IMAGE="$REDIS_IMAGE" scripts/build-offline-images.sh

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(18))'; }
work=$(mktemp -d)
env_file="$work/smoke.env"
pool_port=$(free_port); flower_port=$(free_port)
site_password=$(secret); user_password=$(secret); flower_password=$(secret)
umask 077
cat > "$env_file" <<ENV
DOCKER_GID=$(stat -c %g /var/run/docker.sock)
HIVEMIND_USERNAME=smoke-site
HIVEMIND_PASSWORD=$site_password
FLOWER_BASIC_AUTH=smoke:$flower_password
HIVEMIND_SITE_IMAGE=$SITE_IMAGE
HIVEMIND_REDIS_IMAGE=$REDIS_IMAGE
HIVEMIND_NODEPOOL_PUBLISH_PORT=$pool_port
HIVEMIND_FLOWER_PORT=$flower_port
ENV
compose() { "${COMPOSE[@]}" --project-name "$PROJECT" --env-file "$env_file" -f docker-compose.yml "$@"; }

cleanup() {
  local rc=$?
  if [ $rc != 0 ]; then
    say "FAILED (exit $rc); last log lines:"
    compose logs --no-color --tail 30 2>&1 | sed 's/^/    /' || true
  fi
  say "tearing down"
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT

say "validating docker-compose.yml"
compose config -q

# wait_healthy SERVICE...: every named service's container reports healthy.
wait_healthy() {
  local deadline=$((SECONDS + BOOT_TIMEOUT)) service id state
  for service in "$@"; do
    while :; do
      id=$(compose ps -q "$service")
      state=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id" 2>/dev/null || echo missing)
      [ "$state" = healthy ] && break
      if [ $SECONDS -ge $deadline ]; then echo "error: $service is $state after ${BOOT_TIMEOUT}s" >&2; return 1; fi
      sleep 2
    done
    say "$service healthy"
  done
}

say "starting redis and nodepool (project $PROJECT, Node Pool on 127.0.0.1:$pool_port)"
start=$SECONDS
compose up -d redis nodepool
wait_healthy redis nodepool

say "creating accounts with the CLI inside the nodepool container"
# The password goes through stdin (the prompt), never on a command line.
printf '%s\n%s\n' "$site_password" "$site_password" | compose exec -T nodepool hivemind users add smoke-site
printf '%s\n%s\n' "$user_password" "$user_password" | compose exec -T nodepool hivemind users add smoke-user --balance 100

say "starting bridge, worker-cpu and flower"
compose up -d bridge worker-cpu flower
wait_healthy bridge worker-cpu flower
say "stack up in $((SECONDS - start))s"

say "flower: without auth and with it"
code=$(python3 -c "import urllib.request, urllib.error, sys
try: print(urllib.request.urlopen('http://127.0.0.1:$flower_port/', timeout=5).status)
except urllib.error.HTTPError as e: print(e.code)")
[ "$code" = 401 ] || { echo "error: Flower answered $code without credentials (want 401)" >&2; exit 1; }
FLOWER_AUTH="smoke:$flower_password" python3 -c "import base64, os, urllib.request
req = urllib.request.Request('http://127.0.0.1:$flower_port/api/workers?refresh=1', headers={'Authorization': 'Basic ' + base64.b64encode(os.environ['FLOWER_AUTH'].encode()).decode()})
seen = sorted(__import__('json').load(urllib.request.urlopen(req, timeout=30)))
print('    workers Flower sees:', seen)
assert 'celery@worker-cpu' in seen, 'Flower does not see worker-cpu'"

say "submitting examples/cpu_task through the CLI"
export HIVEMIND_NODEPOOL_ADDRESS="127.0.0.1:$pool_port" HIVEMIND_USERNAME=smoke-user HIVEMIND_PASSWORD="$user_password"
"$HIVEMIND" submit examples/cpu_task --wait --json > "$work/status.json"
sed 's/^/    /' "$work/status.json"
task_id=$(python3 -c "import json, sys; s = json.load(open(sys.argv[1])); print(s['task_id'])" "$work/status.json")
state=$(python3 -c "import json, sys; s = json.load(open(sys.argv[1])); print(s['status'])" "$work/status.json")
[ "$state" = COMPLETED ] || { echo "error: task $task_id ended $state" >&2; exit 1; }

"$HIVEMIND" result "$task_id" -o "$work/result.zip"
python3 - "$work/result.zip" <<'PY'
import json, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    report = json.loads(z.read("execution_report.json"))
    results = sorted(n for n in z.namelist() if n.startswith("results/"))
assert report["status"] == "succeeded", report
assert results, "the task's results/ folder is missing from the result zip"
usage = report.get("usage") or {}
print(f"    result zip: status={report['status']} exit_code={report.get('exit_code')} files={results}")
print(f"    usage: source={usage.get('source')} cpu_seconds={usage.get('cpu_seconds')} "
      f"memory_peak_bytes={usage.get('memory_peak_bytes')} duration_s={report.get('duration_seconds')} "
      f"reward={report.get('reward')} CPT")
assert usage.get("source") == "cgroup", f"usage came from {usage.get('source')!r}, not the cgroup files"
PY
"$HIVEMIND" balance | sed 's/^/    /'
# The worker (uid 10001) reads the task volumes through its read-only mount, so the
# workspace cap holds: it says so in a warning when it cannot.
if compose logs --no-color worker-cpu 2>&1 | grep -q "workspace cap is not enforced"; then
  echo "error: worker-cpu cannot see the task volumes: the workspace cap is not enforced" >&2; exit 1
fi
say "workspace cap enforced by worker-cpu (it could read the task's volumes)"
say "OK: task $task_id COMPLETED through the compose site in $((SECONDS - start))s"
