"""Health endpoint, the OpenAPI schema, and settings validation at start-up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from hub.env import (
    CHECKED_PREFIXES,
    KNOWN_NAMES,
    check_unknown_names,
    database_from_url,
    env_bool,
    env_numeric_ids,
    env_url,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_health_reports_database_and_queue(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["queue"]["depth"] == 0


@pytest.mark.django_db
def test_health_says_stalled_when_ready_tasks_wait_too_long(client):
    import datetime as dt

    from django.utils import timezone
    from django_q.models import OrmQ

    OrmQ.objects.create(key="hub", payload="x", lock=timezone.now() - dt.timedelta(minutes=10))
    response = client.get("/api/health")
    assert response.status_code == 503 and response.json()["queue"]["status"] == "stalled"
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["health"] == "degraded" and response.json()["errors"][0]["field"] == "queue"


@pytest.mark.django_db
def test_openapi_schema_builds_and_lists_the_endpoints(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in [
        "/api/v1/marketing-cloud/journey/execute",
        "/api/v1/events",
        "/api/v1/individuals",
        "/api/v1/individuals/{master_id}",
        "/api/v1/sync-runs/{id}",
        "/api/health",
    ]:
        assert path in paths


def test_schema_generation_has_no_warnings():
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", os.devnull],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HUB_DEBUG": "true"},
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_unknown_and_malformed_settings_are_refused(monkeypatch):
    with pytest.raises(ImproperlyConfigured, match="HUB_DEBGU"):
        check_unknown_names({"HUB_DEBGU": "true", "PATH": "/bin"})
    monkeypatch.setenv("HUB_DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="HUB_DEBUG must be true or false"):
        env_bool("HUB_DEBUG", False)
    monkeypatch.setenv("MC_AUTH_BASE_URL", "ftp://x")
    with pytest.raises(ImproperlyConfigured, match="MC_AUTH_BASE_URL"):
        env_url("MC_AUTH_BASE_URL")
    with pytest.raises(ImproperlyConfigured, match="PostgreSQL only"):
        database_from_url("sqlite:///db.sqlite3")
    for bad in ("All Subscribers", "0", "12,x"):
        monkeypatch.setenv("MC_ALL_SUBSCRIBERS_LIST_ID", bad)
        with pytest.raises(ImproperlyConfigured, match="MC_ALL_SUBSCRIBERS_LIST_ID"):
            env_numeric_ids("MC_ALL_SUBSCRIBERS_LIST_ID")
    monkeypatch.setenv("MC_ALL_SUBSCRIBERS_LIST_ID", " 10001, 20002 ")
    assert env_numeric_ids("MC_ALL_SUBSCRIBERS_LIST_ID") == ["10001", "20002"]
    monkeypatch.delenv("MC_ALL_SUBSCRIBERS_LIST_ID")
    assert env_numeric_ids("MC_ALL_SUBSCRIBERS_LIST_ID") == []


def test_every_setting_the_hub_reads_is_known_and_documented():
    """A name read but not known is refused at start-up as a typo; one not in the README is a secret to operators."""
    read = set()
    for path in (ROOT / "hub").glob("*.py"):
        read |= set(
            re.findall(
                r'env_(?:str|required|bool|int|float|list|url|numeric_ids|business_units)\(\s*"([A-Z][A-Z0-9_]+)"',
                path.read_text(),
            )
        )
    assert read, "the settings read their names through hub.env"
    ours = {name for name in read if name.startswith(CHECKED_PREFIXES)}
    assert ours <= KNOWN_NAMES, sorted(ours - KNOWN_NAMES)
    readme = (ROOT / "README.md").read_text()
    assert not [name for name in sorted(read) if f"`{name}`" not in readme]


def test_database_url_forms():
    tcp = database_from_url("postgresql://hub:s%40cret@db.internal:6432/hubdb?sslmode=require")
    assert (tcp["HOST"], tcp["PORT"], tcp["NAME"], tcp["USER"], tcp["PASSWORD"]) == (
        "db.internal",
        "6432",
        "hubdb",
        "hub",
        "s@cret",
    )
    assert tcp["OPTIONS"] == {"sslmode": "require"}
    socket = database_from_url("postgresql://postgres:@/postgres?host=/work/var/pgdata")
    assert socket["HOST"] == "/work/var/pgdata" and socket["OPTIONS"] == {}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HUB_DEBUG": "sometimes"}, "HUB_DEBUG must be true or false"),
        ({"HUB_Q_WORKERS": "many"}, "HUB_Q_WORKERS must be an integer"),
        ({"MC_ACCOUNT_ID": "abc"}, "MC_ACCOUNT_ID must be the numeric MID"),
        ({"HUB_SECRETKEY": "x"}, "Unknown setting"),
        ({"HUB_Q_TIMEOUT": "100", "HUB_Q_RETRY": "150"}, "HUB_Q_RETRY"),
        ({"HUB_DATABASE_POOLER": "pgpool"}, "HUB_DATABASE_POOLER must be none or pgbouncer"),
        (
            {"HUB_DATABASE_POOLER": "pgbouncer", "DATABASE_URL": "postgresql://hub@db:6432/hub?prepare_threshold=5"},
            "DATABASE_URL sets prepare_threshold",
        ),
        ({"HUB_INSTANCE_NAME": "web 1"}, "HUB_INSTANCE_NAME must be letters"),
    ],
)
def test_start_up_stops_with_a_clear_message(env, message):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HUB_DEBUG": "true", **env},
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_production_settings_pass_the_deploy_check(settings):
    env = {
        **os.environ,
        "HUB_SECRET_KEY": "x" * 64 + "-production-like-key-for-the-check",
        "HUB_ALLOWED_HOSTS": "hub.example.com",
        "HUB_DEBUG": "false",
        # Production names its database; the embedded one (when the tests use it) is refused there.
        "DATABASE_URL": settings.EFFECTIVE_DATABASE_URL,
    }
    env.pop("HUB_TESTING", None)
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # a test-only switch (browser tests), never a deployment's
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
def test_security_headers_on_admin_and_api(client):
    page = client.get("/admin/login/")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert "script-src 'self'" in client.get("/api/health").headers["Content-Security-Policy"]
    # The Journey Builder page keeps its own policy (it is framed by Marketing Cloud).
    activity = client.get("/api/v1/marketing-cloud/journey/index.html")
    assert "frame-ancestors https://*.exacttarget.com" in activity.headers["Content-Security-Policy"]


@pytest.mark.django_db
def test_a_busy_cluster_with_a_backlog_is_not_called_stalled(client):
    import datetime as dt

    from django.utils import timezone
    from django_q.models import OrmQ, Task

    OrmQ.objects.create(key="hub", payload="x", lock=timezone.now() - dt.timedelta(minutes=10))
    Task.objects.create(id="t1", name="t1", func="f", started=timezone.now(), stopped=timezone.now(), success=True)
    assert client.get("/api/health").json()["queue"]["status"] == "ok"
    Task.objects.filter(id="t1").update(stopped=timezone.now() - dt.timedelta(minutes=5))
    assert client.get("/api/health").json()["queue"]["status"] == "stalled"


def test_behind_pgbouncer_django_declares_no_server_side_cursors():
    def cursors_disabled(pooler: str) -> str:
        return (
            subprocess.run(
                [
                    sys.executable,
                    "manage.py",
                    "shell",
                    "-c",
                    "from django.conf import settings; "
                    "print(settings.DATABASES['default'].get('DISABLE_SERVER_SIDE_CURSORS'))",
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
                env={**os.environ, "HUB_DEBUG": "true", "HUB_DATABASE_POOLER": pooler},
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )

    assert cursors_disabled("pgbouncer") == "True"
    assert cursors_disabled("none") == "None"
