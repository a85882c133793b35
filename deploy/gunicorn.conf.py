"""gunicorn settings for the hub's web process: ``gunicorn --config deploy/gunicorn.conf.py hub.wsgi``.

Sync workers read each request themselves, so a client that sends its headers or its body a
byte at a time holds a whole worker for as long as it likes: as many such clients as workers
and the hub stops answering. This process therefore listens on the loopback only and takes its
requests from nginx (``deploy/nginx/hub.conf.template``), which reads every request in full,
however slowly it arrives, before it passes it on. Never expose this port directly.

Command-line options override these (``--bind``, ``--workers``); so does ``WEB_CONCURRENCY``
for the number of workers.
"""

import os
import time

bind = "127.0.0.1:8001"
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
# Behind a buffering proxy a sync worker only ever sees complete requests; threads or greenlets
# would not make slow clients cheaper here, only the application's concurrency harder to reason about.
worker_class = "sync"
# A request that takes longer than this gets its worker killed and replaced.
timeout = 30
graceful_timeout = 10
# nginx connects from the loopback: only it may set X-Forwarded-For and X-Forwarded-Proto.
forwarded_allow_ips = "127.0.0.1,::1"

# A view may answer before it has read the body (the hub's 413 for an oversized one does). Bytes
# left unread make gunicorn's close a reset, and nginx, still sending the body it buffered, then
# reports a 502 instead of the hub's answer, which senders retry (a third of 5 MiB posts did).
# So what is left is read first: it comes from nginx at loopback speed. nginx may stop sending
# once it has the answer, hence the short wait for each next chunk; the deadline and the cap
# (above nginx's client_max_body_size) bound the rest.
DRAIN_SECONDS = 5.0
DRAIN_IDLE_SECONDS = 0.25
DRAIN_MAX_BYTES = 8 * 1024 * 1024


def post_request(worker, req, environ, resp):
    body, sock = environ.get("wsgi.input"), environ.get("gunicorn.socket")
    if body is None or sock is None:
        return
    deadline = time.monotonic() + DRAIN_SECONDS
    drained = 0
    prior_timeout = sock.gettimeout()
    try:
        while drained < DRAIN_MAX_BYTES and (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(min(remaining, DRAIN_IDLE_SECONDS))
            chunk = body.read(64 * 1024)
            if not chunk:
                return
            drained += len(chunk)
    except Exception:  # the answer is sent already: a body that cannot be read only ends the connection
        return
    finally:
        sock.settimeout(prior_timeout)
