"""Embedded PostgreSQL for development and tests on machines without a server (``DATABASE_URL`` unset).

PyPI's ``pgserver`` ships the PostgreSQL binaries in its wheel. The server keeps
its data under ``var/pgdata`` (git-ignored), listens on a Unix socket only, and
stays up while any process holding a handle lives; the last one stops it.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)


def embedded_database_url(data_dir: Path) -> str:
    """Start (or join) the embedded server and return its connection URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # pgserver keeps its lock file in the user's runtime dir (read at import); give it
    # one when the environment has none (CI, containers) instead of a warning each start.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime_dir = data_dir / "run"
        runtime_dir.mkdir(mode=0o700, exist_ok=True)
        runtime_dir.chmod(0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)
    # Imported here, not at the top: after the runtime dir is set, and only where it runs
    # (production does not install it).
    try:
        import pgserver
    except ImportError:  # pragma: no cover - requirements-local.txt installs it
        raise ImproperlyConfigured(
            "DATABASE_URL is not set and the embedded PostgreSQL (pgserver) is not installed. "
            "Run `make run` / `pip install -r requirements-local.txt`, or set DATABASE_URL."
        ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")
    return server.get_uri()
