# The hub's one image: the web process by default, the task cluster with another command
# (compose.yaml runs both, and the one-shot migration):
#
#   docker build -t customer-hub .
#   docker run ... customer-hub                                  # web: gunicorn on 0.0.0.0:8001
#   docker run ... customer-hub python manage.py qcluster        # worker
#   docker run ... customer-hub python manage.py migrate --noinput
#
# Settings come from the environment at run time (README, "Settings"); nothing secret is in the
# image. gunicorn listens on all of the container's addresses because nginx runs in another
# container: publish nginx's port, never 8001 (deploy/gunicorn.conf.py says why).
#
# PYTHON_IMAGE names the base; both stages use it, so the virtualenv built in the first finds
# its interpreter at the same path in the second. Any Debian-based image with python3.11 and
# its venv module will do (the official python image, or one built from Debian's packages).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

# A mirror or a local wheel directory for pip, when PyPI is not reachable from the build:
# build arguments of this stage only, so none of them reaches the runtime image.
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /build
COPY requirements.txt ./
# Wheels first (anything without a wheel for this platform is built here, where a compiler
# could be added, not in the runtime image), then the virtualenv from those wheels alone.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels -r requirements.txt \
    && /opt/venv/bin/python -m pip uninstall --yes pip


FROM ${PYTHON_IMAGE} AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=hub.settings \
    HUB_DATA_DIR=/app/var

# The processes run as this unprivileged user; the files they run stay root's, read-only to it.
RUN groupadd --gid 10001 hub \
    && useradd --uid 10001 --gid hub --no-create-home --no-log-init --home-dir /nonexistent \
       --shell /usr/sbin/nologin hub

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# What .dockerignore lets through: the application, its templates and deploy/ (no tests,
# emulators, benchmarks, local data or environment files).
COPY . .

# The static files are collected into the image (whitenoise serves them from HUB_DATA_DIR).
# Settings refuse to load without a secret key and a database URL: these two values exist for
# this command only (collectstatic connects to no database) and are not kept in the image.
RUN HUB_SECRET_KEY=collectstatic-at-build-time-only \
    DATABASE_URL=postgresql://build@127.0.0.1:9/unused \
    python manage.py collectstatic --noinput --verbosity 0 \
    && python -m compileall -q /app/customers /app/hub /app/integrations

USER 10001:10001
EXPOSE 8001

# Liveness of the web process (/api/health/live). The worker runs no web server: compose.yaml
# gives it a check of its own.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "deploy/healthcheck.py", "/api/health/live"]

# gunicorn stops gracefully on SIGTERM (docker stop's signal) within graceful_timeout (10 s).
# Its workers' heartbeat files go to memory, not to the container's overlay filesystem; its
# control socket (gunicornc) to /tmp, since the user has no home.
CMD ["gunicorn", "--config", "deploy/gunicorn.conf.py", "--bind", "0.0.0.0:8001", \
     "--worker-tmp-dir", "/dev/shm", "--control-socket", "/tmp/gunicorn.ctl", "hub.wsgi"]
