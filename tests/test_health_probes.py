"""Liveness and readiness: ``/api/health/live`` and ``/api/health/ready``, beside ``/api/health``."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import OperationalError
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone
from django_q.models import OrmQ

import integrations.api.views as views


def test_live_answers_without_touching_the_database(client):
    # No django_db mark: any database access in the view raises here.
    response = client.get("/api/health/live")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_ready_when_database_migrations_and_queue_are_fine(client):
    response = client.get("/api/health/ready")
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "migrations": "ok", "queue": "ok"}}


@pytest.mark.django_db
def test_not_ready_while_a_migration_is_not_applied(client):
    latest = MigrationRecorder.Migration.objects.filter(app="integrations").order_by("-name").first()
    MigrationRecorder.Migration.objects.filter(pk=latest.pk).delete()  # rolled back with the test
    response = client.get("/api/health/ready")
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["checks"]["migrations"] == "1 unapplied"
    assert body["errors"] == [
        {"field": "migrations", "message": f"not applied: integrations.{latest.name} (run manage.py migrate)"}
    ]
    # The old health check keeps its meaning: it is about the database and the queue only.
    assert client.get("/api/health").status_code == 200


@pytest.mark.django_db
def test_not_ready_while_the_queue_is_stalled(client):
    OrmQ.objects.create(key="hub", payload="x", lock=timezone.now() - dt.timedelta(minutes=10))
    response = client.get("/api/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"] == {"database": "ok", "migrations": "ok", "queue": "stalled"}
    assert [e["field"] for e in body["errors"]] == ["queue"]
    assert client.get("/api/health/live").status_code == 200  # a stalled queue is no reason to restart the web


@pytest.mark.django_db
def test_not_ready_when_the_database_fails(client, monkeypatch):
    def unreachable() -> list[str]:
        raise OperationalError("connection refused")

    monkeypatch.setattr(views, "unapplied_migrations", unreachable)
    response = client.get("/api/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"] == "unreachable"
    assert body["errors"] == [{"field": "database", "message": "unreachable: OperationalError"}]


@pytest.mark.django_db
def test_the_probes_are_in_the_openapi_schema(client):
    paths = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()["paths"]
    assert "/api/health/live" in paths and "/api/health/ready" in paths
    assert {"200", "503"} <= set(paths["/api/health/ready"]["get"]["responses"])
