"""Fixtures: the Marketing Cloud sandbox over real HTTP, API keys, signed journey calls."""

from __future__ import annotations

import os
import shutil
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from sandboxes.marketing_cloud.ens import ALL_SUBSCRIBERS_LIST_ID
from sandboxes.marketing_cloud.journey import build_execute_payload, sign_execute
from sandboxes.marketing_cloud.server import MarketingCloudSandbox, SandboxConfig

JWT_SECRET = "test-jwt-signing-secret-0123456789abcdef"
CLIENT_ID = "test-client-id"
CLIENT_SECRET = "test-client-secret"


@pytest.fixture(scope="session")
def _sandbox_server() -> Iterator[MarketingCloudSandbox]:
    sandbox = MarketingCloudSandbox(config=SandboxConfig(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)).start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def sandbox(_sandbox_server: MarketingCloudSandbox, settings: Any) -> MarketingCloudSandbox:
    """A clean sandbox, with the hub's settings pointing at it."""
    _sandbox_server.reset()
    settings.MC_AUTH_BASE_URL = _sandbox_server.url
    settings.MC_REST_BASE_URL = ""
    settings.MC_CLIENT_ID = CLIENT_ID
    settings.MC_CLIENT_SECRET = CLIENT_SECRET
    settings.MC_ACCOUNT_ID = ""
    settings.MC_JWT_SECRET = JWT_SECRET
    settings.MC_HTTP_TIMEOUT = 5.0
    settings.MC_ALL_SUBSCRIBERS_LIST_ID = [ALL_SUBSCRIBERS_LIST_ID]  # the sandbox tenant's
    return _sandbox_server


def subscriber(key: str = "SK-1001", email: str = "ada.lovelace@example.com", **extra: str) -> dict[str, str]:
    args = {
        "SubscriberKey": key,
        "EmailAddress": email,
        "SubscriberId": "501",
        "FirstName": "Ada",
        "LastName": "Lovelace",
        "MobileNumber": "+44 20 7946 0018",
        "BirthDate": "1985-12-10",
        "Gender": "Female",
        "AddressLine1": "12 St James's Square",
        "City": "London",
        "PostalCode": "SW1Y 4JH",
        "Country": "GB",
        "Status": "Active",
        "CreatedDate": "2026-11-01T09:00:00Z",
        "ModifiedDate": "2026-11-01T09:00:00Z",
    }
    if key != "SK-1001":
        # Another subscriber key is another person unless the test says otherwise: their own
        # phone and postcode, so the match rules (same phone and name...) do not join them.
        digits = f"{zlib.crc32(key.encode()) % 10_000:04d}"
        args["MobileNumber"] = f"+44 20 7946 {digits}"
        args["PostalCode"] = f"SW{digits[:2]} {digits[2]}JH"
    args.update(extra)
    return {k: v for k, v in args.items() if v is not None}


def journey_jwt(args: dict[str, Any], *, secret: str = JWT_SECRET, **kwargs: Any) -> bytes:
    return sign_execute(build_execute_payload(args, **kwargs), secret)


class JourneyCaller:
    """Posts signed execute calls to a running hub, as Journey Builder does."""

    def __init__(self, base_url: str) -> None:
        self.url = f"{base_url}/api/v1/marketing-cloud/journey/execute"
        self.session = requests.Session()

    def post_raw(self, body: bytes, content_type: str = "application/jwt") -> requests.Response:
        return self.session.post(self.url, data=body, headers={"Content-Type": content_type}, timeout=10)

    def execute(self, args: dict[str, Any], **kwargs: Any) -> requests.Response:
        return self.post_raw(journey_jwt(args, **kwargs))


@pytest.fixture
def journey(live_server: Any, sandbox: MarketingCloudSandbox) -> JourneyCaller:
    return JourneyCaller(live_server.url)


TEST_SOURCES = ["B2C_COMMERCE", "POS", "SALESFORCE"]


@pytest.fixture
def api_key(transactional_db: Any) -> str:
    from integrations.models import ApiClient

    # Bound to the systems the tests send as (a key sends only for the sources it is bound to).
    _, key = ApiClient.issue("test-client", ["ingest", "read"], TEST_SOURCES)
    return key


@pytest.fixture
def api(live_server: Any, api_key: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {api_key}"
    session.base_url = live_server.url  # type: ignore[attr-defined]
    return session


@pytest.fixture(autouse=True)
def _no_starvation_relief(monkeypatch):
    """Tests count Marketing Cloud calls exactly: no inline flush because a slow machine took > 3 s.

    The starvation relief itself is tested with its own setting (test_writeback_batching).
    """
    import integrations.marketing_cloud.writeback as writeback

    monkeypatch.setattr(writeback, "STARVED_AFTER", 3600.0)


def _seed_defaults() -> None:
    """The default match and survivorship rules and the two admin roles, as the migrations seed them."""
    from django.contrib.auth.models import Group, Permission
    from django.db import transaction

    from customers.defaults import seed_rules
    from customers.models import MatchRule, SurvivorshipRule
    from hub.roles import ensure_roles

    with transaction.atomic():  # one commit, not one per row
        seed_rules(MatchRule, SurvivorshipRule)
        ensure_roles(Group, Permission)


def _reseed_after_flush(**kwargs: Any) -> None:
    _seed_defaults()


# What migrate derives from the models, the same before and after every test: kept by the flush.
KEPT_BY_FLUSH = ("django_content_type", "auth_permission")
FLUSHED_LAST = ("integrations_metricsample", "integrations_metrictotal")


def _delete_not_truncate(original: Callable[..., list[str]]) -> Callable[..., list[str]]:
    """PostgreSQL's flush, emptying each table with DELETE instead of one TRUNCATE of them all.

    A transactional test ends with a flush. TRUNCATE gives every table (about 40) a new file,
    about 0.3 s with fsync on; DELETE of the few rows a test wrote takes milliseconds. The
    foreign keys Django makes are deferred, so the order of the DELETEs does not matter: they
    are checked when the flush commits. Content types and permissions stay (as they do for a
    rolled-back test), so post_migrate only finds them there instead of making them again.
    """

    def sql_flush(
        self: Any, style: Any, tables: list[str], *, reset_sequences: bool = False, allow_cascade: bool = False
    ) -> list[str]:
        if reset_sequences or allow_cascade:
            return original(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        # The metric samples last: deleting the events appends samples to them (a trigger counts them).
        ordered = sorted((t for t in tables if t not in KEPT_BY_FLUSH), key=lambda t: t in FLUSHED_LAST)
        return [f"{style.SQL_KEYWORD('DELETE FROM')} {style.SQL_FIELD(self.quote_name(table))};" for table in ordered]

    return sql_flush


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """The test database, with the default rules and roles seeded once for the session.

    Tests marked ``django_db`` run in a transaction rolled back at the end, so the seeded rows
    stay for the next test. Transactional tests (``transaction=True``, and any test using
    ``live_server``: the server thread has its own connection and sees only committed rows)
    commit, and are cleaned up by a flush that empties every table but content types and
    permissions, migration data included; Django then sends post_migrate, on which the defaults
    are seeded again.
    """
    from django.apps import apps
    from django.db.backends.postgresql.operations import DatabaseOperations
    from django.db.models.signals import post_migrate

    with django_db_blocker.unblock():
        _seed_defaults()
    # After every app's post_migrate work (permissions above all: the roles are made of them).
    last_app = [config for config in apps.get_app_configs() if config.models_module is not None][-1]
    post_migrate.connect(_reseed_after_flush, sender=last_app, dispatch_uid="tests.reseed_after_flush")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DatabaseOperations, "sql_flush", _delete_not_truncate(DatabaseOperations.sql_flush))
        yield
    post_migrate.disconnect(sender=last_app, dispatch_uid="tests.reseed_after_flush")


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Chromium is not installed: `make browser` (apt-get install chromium) installs it")
    return path


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright, for the browser tests (marked ``browser``)."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API runs an event loop in this thread; the ORM calls of these tests are
    # ordinary sync code. Allowed for these tests only (a deployment must never set it: check
    # --deploy refuses it).
    with pytest.MonkeyPatch.context() as patch, playwright_api.sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        instance = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield instance
        instance.close()
