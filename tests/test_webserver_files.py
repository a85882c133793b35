"""The shipped web-process files as the README tells an operator to use them."""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess

import pytest

from hub.webserver import GUNICORN_CONFIG, NGINX_SITE_TEMPLATE, gunicorn_command, render_nginx_site


@pytest.mark.skipif(not shutil.which("envsubst"), reason="envsubst (gettext-base) is not installed")
def test_the_documented_envsubst_renders_what_the_hub_runs():
    env = {**os.environ, "NGINX_LISTEN": "127.0.0.1:18000", "NGINX_UPSTREAM": "127.0.0.1:18001"}
    rendered = subprocess.run(
        ["envsubst", "$NGINX_LISTEN $NGINX_UPSTREAM"],  # noqa: S607 - the README's command
        input=NGINX_SITE_TEMPLATE.read_text(),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert rendered == render_nginx_site("127.0.0.1:18000", "127.0.0.1:18001")
    assert "listen 127.0.0.1:18000;" in rendered and "server 127.0.0.1:18001;" in rendered
    assert "${" not in rendered and "$NGINX_" not in rendered


def test_the_shipped_gunicorn_settings_keep_it_behind_nginx():
    settings = runpy.run_path(str(GUNICORN_CONFIG))
    assert settings["bind"].startswith("127.0.0.1:"), "only nginx may reach gunicorn"
    assert settings["worker_class"] == "sync"
    assert callable(settings["post_request"])
    assert gunicorn_command("127.0.0.1:18001")[-5:] == [
        "--config",
        str(GUNICORN_CONFIG),
        "--bind",
        "127.0.0.1:18001",
        "hub.wsgi",
    ]
