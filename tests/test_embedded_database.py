"""The embedded PostgreSQL serves `make run` and the tests only: production neither installs nor starts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def production_like_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HUB_SECRET_KEY": "x" * 64 + "-production-like-key", **extra}
    for name in ("DATABASE_URL", "HUB_TESTING", "DJANGO_ALLOW_ASYNC_UNSAFE"):
        env.pop(name, None)
    return env


@pytest.mark.parametrize("debug", ["false", None])
def test_without_debug_or_tests_no_database_url_is_refused_with_a_clear_message(debug, tmp_path):
    env = production_like_env(HUB_DATA_DIR=str(tmp_path))
    if debug is None:
        env.pop("HUB_DEBUG", None)
    else:
        env["HUB_DEBUG"] = debug
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode != 0
    assert result.stderr.startswith("manage.py: DATABASE_URL must be set") and "Traceback" not in result.stderr
    assert not (tmp_path / "pgdata").exists(), "no embedded server was started"


def test_production_requirements_do_not_install_the_embedded_server():
    production = (ROOT / "requirements.txt").read_text().lower().split()
    local = (ROOT / "requirements-local.txt").read_text().lower().split()
    assert not any(line.startswith("pgserver") for line in production)
    assert any(line.startswith("pgserver==") for line in local) and "requirements.txt" in local
    assert "requirements-local.txt" in (ROOT / "requirements-dev.txt").read_text().split()
