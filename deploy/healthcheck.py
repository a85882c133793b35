"""Container health check: GET a health path of the web process on this host, exit 0 on a 200.

``python deploy/healthcheck.py [PATH] [--port PORT]`` (default ``/api/health/live`` on 8001, where
the image's gunicorn listens). Standard library only: it runs inside the image, where nothing else
is needed for it.

The request carries the first name of ``HUB_ALLOWED_HOSTS`` as its Host, since Django answers any
other with 400, and ``X-Forwarded-Proto: https``, since with ``HUB_SECURE`` (the production default)
Django redirects plain HTTP to https for every path but ``/api/health``; it comes from 127.0.0.1,
which the shipped gunicorn settings trust to say so.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys

DEFAULT_PATH = "/api/health/live"
DEFAULT_PORT = 8001
TIMEOUT_SECONDS = 4.0


def host_header(allowed_hosts: str) -> str:
    """A Host value Django accepts under ``allowed_hosts`` (the ``HUB_ALLOWED_HOSTS`` text)."""
    for name in (part.strip() for part in allowed_hosts.split(",")):
        if name and name != "*":
            # ".example.com" allows example.com and its subdomains.
            return name.lstrip(".")
    return "localhost"


def check(path: str, port: int) -> int:
    """The status code of ``GET path`` on 127.0.0.1:``port``, or 0 when nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_SECONDS)
    headers = {"Host": host_header(os.environ.get("HUB_ALLOWED_HOSTS", "")), "X-Forwarded-Proto": "https"}
    try:
        connection.request("GET", path, headers=headers)
        return connection.getresponse().status
    except OSError:
        return 0
    finally:
        connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=DEFAULT_PATH)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    status = check(args.path, args.port)
    if status != 200:
        print(f"GET {args.path} on port {args.port}: {status or 'no answer'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
