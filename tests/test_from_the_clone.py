"""What a newcomer runs from a fresh clone works as written: manage.py commands, the printed hints,
an admin header without dead links, and a test run that leaves the clone clean."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from integrations.management.commands.run_hub import manage_py_command
from tests import test_browser

ROOT = Path(__file__).resolve().parent.parent
NO_CONFIGURATION = ("HUB_DEBUG", "HUB_SECRET_KEY", "DATABASE_URL", "HUB_TESTING", "DJANGO_ALLOW_ASYNC_UNSAFE")


def clone_env(**extra: str) -> dict[str, str]:
    """The environment of a shell in a fresh clone: none of the hub's settings, not a test run."""
    env = {name: value for name, value in os.environ.items() if name not in NO_CONFIGURATION}
    return {**env, **extra}


def test_a_command_without_configuration_prints_one_line_naming_both_ways_out(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "changepassword", "admin"],
        cwd=ROOT,
        env=clone_env(HUB_DATA_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "manage.py: Set HUB_DEBUG=true for the embedded development database, "
        "or HUB_SECRET_KEY and DATABASE_URL for production."
    ]
    assert not (tmp_path / "pgdata").exists(), "no embedded server was started"


def test_the_command_run_hub_prints_works_as_written(settings):
    # run_hub runs with HUB_DEBUG=true (make run sets it); the line it prints carries what a shell
    # in the clone lacks. DATABASE_URL stays: here it stands for the running embedded server.
    settings.DEBUG = True
    line = manage_py_command("check")
    assert line.startswith("HUB_DEBUG=true ")
    words = shlex.split(line)
    assignments = dict(word.split("=", 1) for word in words if "=" in word and not word.startswith("-"))
    argv = [word for word in words if word.split("=", 1)[0] not in assignments]
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        pytest.skip("needs DATABASE_URL: without it the command would start the embedded server")
    result = subprocess.run(
        argv,
        cwd=ROOT,
        env=clone_env(DATABASE_URL=database_url, **assignments),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_admin_header_has_no_view_site_link(admin_client):
    page = admin_client.get("/admin/")
    assert page.status_code == 200
    assert b"View site" not in page.content


def test_browser_tests_write_their_screenshots_to_an_ignored_folder():
    if os.environ.get("HUB_SCREENSHOTS_DIR"):
        pytest.skip("make screenshots is updating docs/screenshots/ on purpose")
    target = test_browser.SCREENSHOTS / "dashboard.png"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(target)], cwd=ROOT, timeout=30)  # noqa: S603, S607
    assert ignored.returncode == 0, f"{target} is not git-ignored"
