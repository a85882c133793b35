"""The web process as deployed: gunicorn with ``deploy/gunicorn.conf.py`` behind nginx with
``deploy/nginx/hub.conf.template``.

``manage.py run_hub`` and ``tests/test_slow_clients.py`` start it from here, so both run the
shipped files; only the addresses differ.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
from pathlib import Path

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy"
GUNICORN_CONFIG = DEPLOY_DIR / "gunicorn.conf.py"
NGINX_SITE_TEMPLATE = DEPLOY_DIR / "nginx" / "hub.conf.template"
NGINX_PLACEHOLDERS = ("NGINX_LISTEN", "NGINX_UPSTREAM")
# Debian and Ubuntu install nginx where an unprivileged user's PATH does not look.
NGINX_FALLBACK_PATHS = (Path("/usr/sbin/nginx"), Path("/usr/local/sbin/nginx"))
_NAMES = "|".join(NGINX_PLACEHOLDERS)
# envsubst fills both spellings, $NAME and ${NAME}, of the names it is given and nothing else.
_PLACEHOLDER = re.compile(r"\$(?:\{(" + _NAMES + r")\}|(" + _NAMES + r")\b)")


class NginxMissing(RuntimeError):
    pass


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gunicorn_command(bind: str, *options: str) -> list[str]:
    """gunicorn with the shipped settings, listening on ``bind``; ``options`` override the file."""
    return [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONFIG), "--bind", bind, *options, "hub.wsgi"]


def render_nginx_site(listen: str, upstream: str) -> str:
    """The shipped site template with its placeholders filled, as the documented ``envsubst`` fills them."""
    values = {"NGINX_LISTEN": listen, "NGINX_UPSTREAM": upstream}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1) or m.group(2)], NGINX_SITE_TEMPLATE.read_text())


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((str(p) for p in NGINX_FALLBACK_PATHS if p.exists()), None)
    if not found:
        raise NginxMissing("nginx is not installed (`make nginx`, or: apt-get install nginx)")
    return found


def nginx_command(prefix: Path, listen: str, upstream: str, *, worker_connections: int = 1024) -> list[str]:
    """Write an nginx.conf under ``prefix`` around the rendered site; return the command that runs it.

    The surrounding file holds only what a packaged nginx.conf would (process, logs, temporary
    files), pointed into ``prefix`` so that no root-owned path is needed; nginx stays in the
    foreground so that it stops with the process group it runs in.
    """
    binary = nginx_binary()
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "hub.conf").write_text(render_nginx_site(listen, upstream))
    temp_paths = "\n".join(
        f"    {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # Started as root, nginx would run its workers as nobody, who cannot enter a private prefix.
    user = "user root;\n" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(
        f"{user}daemon off;\n"
        "worker_processes 1;\n"
        f"pid {prefix / 'nginx.pid'};\n"
        "error_log stderr warn;\n"
        f"events {{ worker_connections {worker_connections}; }}\n"
        "http {\n"
        "    access_log off;\n"
        f"{temp_paths}\n"
        f"    include {prefix / 'hub.conf'};\n"
        "}\n"
    )
    return [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"]
