#!/usr/bin/env bash
# Build the Dockerfile and run the image against a PostgreSQL on this host, where no container
# registry can be reached (`make deploy-image-check`; README, "Deploying").
#
# Needs a running Docker daemon (DOCKER_HOST, or the default socket), DATABASE_URL pointing at a
# database on 127.0.0.1 that may be migrated, and root for debootstrap. With no registry, the
# base is made here: Debian bookworm with its python3 and python3-venv (debootstrap from
# Debian's packages), imported as hub-local/debian-python3:bookworm; set BASE_IMAGE to use
# another. pip in the build takes wheels that this host's pip downloaded, served on the loopback
# (the build runs on the host's network), so the build reaches no index itself.
#
# What it shows: the build completes (both stages, collectstatic); migrate, gunicorn and qcluster
# start from the image as a non-root user on a read-only root filesystem; the image's
# HEALTHCHECK command answers; docker stop ends the worker cleanly. What it does not: that the
# official python image or the compose file's other images work, that compose.yaml runs.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${DATABASE_URL:?set DATABASE_URL (a database on 127.0.0.1 this check may migrate)}"
BASE_IMAGE="${BASE_IMAGE:-hub-local/debian-python3:bookworm}"
IMAGE="${IMAGE:-customer-hub:check}"
WORK="${WORK:-var/image-check}"
WHEEL_PORT="${WHEEL_PORT:-18765}"
WEB_PORT="${WEB_PORT:-8001}"
PYTHON="${PYTHON:-.venv/bin/python}"
DOCKER="${DOCKER:-docker}"
mkdir -p "$WORK"

"$DOCKER" info >/dev/null 2>&1 || { echo "no Docker daemon answers (DOCKER_HOST=${DOCKER_HOST:-default})"; exit 1; }

if ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  [ "$BASE_IMAGE" = hub-local/debian-python3:bookworm ] || { echo "$BASE_IMAGE is not here"; exit 1; }
  echo "== making $BASE_IMAGE with debootstrap"
  rootfs="$WORK/rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" http://deb.debian.org/debian
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | "$DOCKER" import --change 'CMD ["python3"]' - "$BASE_IMAGE"
  rm -rf "$rootfs"
fi

echo "== wheels for requirements.txt, from this host's pip"
"$PYTHON" -m pip wheel --quiet --wheel-dir "$WORK/wheels" -r requirements.txt
"$PYTHON" -m http.server "$WHEEL_PORT" --bind 127.0.0.1 --directory "$WORK/wheels" >/dev/null 2>&1 &
wheel_server=$!
cleanup() {
  kill "$wheel_server" 2>/dev/null || true
  "$DOCKER" rm -f hub-check-web hub-check-worker >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "== docker build (base $BASE_IMAGE)"
started=$(date +%s)
DOCKER_BUILDKIT=0 "$DOCKER" build --network host \
  --build-arg PYTHON_IMAGE="$BASE_IMAGE" \
  --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS="http://127.0.0.1:$WHEEL_PORT/" \
  -t "$IMAGE" .
echo "built in $(( $(date +%s) - started )) s"

echo "== the image"
"$DOCKER" image inspect "$IMAGE" --format 'user={{.Config.User}} cmd={{json .Config.Cmd}} healthcheck={{json .Config.Healthcheck.Test}}'
if "$DOCKER" history --no-trunc "$IMAGE" | grep -E 'ENV .*(HUB_SECRET_KEY|DATABASE_URL)'; then
  echo "a secret setting is in the image's ENV"; exit 1
fi
"$DOCKER" run --rm --network none --entrypoint "" "$IMAGE" \
  sh -c 'id -u; test -f /app/var/staticfiles/admin/css/base.css && echo "static files collected"; ! touch /app/x 2>/dev/null && echo "/app is not writable by the process"'

# As compose.yaml runs them: unprivileged, read-only root filesystem, no capabilities. On the
# host's network, so that they reach the PostgreSQL on 127.0.0.1; gunicorn therefore binds the
# loopback instead of the image's 0.0.0.0 (its command is otherwise the image's).
run_opts=(--network host --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges:true
          -e DATABASE_URL="$DATABASE_URL" -e HUB_SECRET_KEY=image-check-not-a-real-secret-0123456789abcdef
          -e HUB_ALLOWED_HOSTS=hub.example.com -e HUB_LOG_LEVEL=WARNING)

echo "== migrate"
"$DOCKER" run --rm "${run_opts[@]}" "$IMAGE" python manage.py migrate --noinput

echo "== web"
"$DOCKER" run -d --name hub-check-web "${run_opts[@]}" "$IMAGE" \
  gunicorn --config deploy/gunicorn.conf.py --bind "127.0.0.1:$WEB_PORT" --worker-tmp-dir /dev/shm \
  --control-socket /tmp/gunicorn.ctl --workers 2 hub.wsgi >/dev/null
for _ in $(seq 1 60); do
  "$DOCKER" exec hub-check-web python deploy/healthcheck.py /api/health --port "$WEB_PORT" 2>/dev/null && break
  sleep 1
done
"$DOCKER" exec hub-check-web python deploy/healthcheck.py /api/health --port "$WEB_PORT"
echo "the image's health check command answers 200 for /api/health"
curl -fsS -H 'Host: hub.example.com' "http://127.0.0.1:$WEB_PORT/api/health"; echo
"$DOCKER" exec hub-check-web python deploy/healthcheck.py /api/health/live --port "$WEB_PORT" \
  && echo "/api/health/live answers 200" \
  || echo "/api/health/live does not answer 200 on this branch (the endpoint comes with another change)"
started=$(date +%s)
"$DOCKER" stop --time 20 hub-check-web >/dev/null
echo "web stopped $(( $(date +%s) - started )) s after docker stop; exit code $("$DOCKER" inspect hub-check-web --format '{{.State.ExitCode}}')"

echo "== worker"
"$DOCKER" run -d --name hub-check-worker --init "${run_opts[@]}" "$IMAGE" python manage.py qcluster >/dev/null
"$DOCKER" exec hub-check-worker python manage.py shell --no-imports --command \
  "from django_q.tasks import async_task, result; print('a task run by the cluster returned', result(async_task('math.floor', 2.5), wait=60000))"
"$DOCKER" exec hub-check-worker python manage.py shell --no-imports --command \
  "from integrations.queue import cluster_stalled; raise SystemExit(1 if cluster_stalled() else 0)"
echo "compose.yaml's worker health check command exits 0"
started=$(date +%s)
"$DOCKER" stop --time 90 hub-check-worker >/dev/null
echo "worker stopped $(( $(date +%s) - started )) s after docker stop; exit code $("$DOCKER" inspect hub-check-worker --format '{{.State.ExitCode}}')"
"$DOCKER" logs hub-check-worker 2>&1 | tail -5
echo "== image check passed"
