"""Where downstream targets may point, who may change that, and what of an answer is kept.

Production rules throughout (https, public addresses) unless a test turns a development switch on.
Deliveries go over real HTTP to local receivers; a host name's answer is set through
``socket.getaddrinfo`` (the one resolver the save-time check, requests-hardened and urllib3 all call).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User

from customers.models import ChangeEvent
from hub.roles import STEWARD, VIEWER
from integrations.downstream.egress import delivery_session
from integrations.downstream.models import Delivery, DownstreamTarget
from integrations.models import SyncStep
from tests.conftest import subscriber
from tests.queue import run_queued
from tests.webhook_receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parent.parent
ADD_URL = "/admin/downstream/downstreamtarget/add/"
SECRET = DownstreamTarget._meta.get_field("secret").get_default()


@pytest.fixture
def production_rules(settings):
    settings.DOWNSTREAM_ALLOW_HTTP = False
    settings.DOWNSTREAM_ALLOW_LOOPBACK = False
    return settings


@pytest.fixture
def fake_dns(monkeypatch):
    """Names the test decides the answers for (name -> IPs); every other name resolves as usual."""
    answers: dict[str, list[str]] = {}
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002 - socket's own names
        name = host.decode() if isinstance(host, bytes) else host
        if name not in answers:
            return real_getaddrinfo(host, port, family, type, proto, flags)
        found = []
        for address in answers[name]:
            with contextlib.suppress(socket.gaierror):  # an IPv6 answer to an IPv4-only question
                found += real_getaddrinfo(address, port, family, type, proto, flags)
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return found

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.fixture
def receiver():
    with WebhookReceiver(SECRET) as server:
        yield server


def port_of(receiver: WebhookReceiver) -> int:
    return receiver.server.server_address[1]


def add_form(url: str, name: str = "crm") -> dict[str, str]:
    return {"name": name, "kind": "webhook", "url": url, "secret": SECRET, "event_types": "[]", "enabled": "on"}


# ---------------------------------------------------------------------------
# Saved: https only, public addresses only
# ---------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://hooks.example.com/in", "Use https://"),
        ("https://127.0.0.1/hooks", "a loopback address"),
        ("https://localhost:8443/hooks", "a loopback address"),
        ("https://[::1]/hooks", "a loopback address"),
        ("https://[::ffff:127.0.0.1]/hooks", "a loopback address"),
        ("https://10.1.2.3/hooks", "a private address"),
        ("https://172.16.5.4/hooks", "a private address"),
        ("https://192.168.0.10/hooks", "a private address"),
        ("https://[fd00:ec2::254]/latest/meta-data/", "a private address"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://[fe80::1]/hooks", "link-local"),
        ("https://[::ffff:169.254.169.254]/", "link-local"),
        ("https://100.64.0.1/hooks", "carrier-grade NAT"),
        ("https://0.0.0.0/hooks", "the unspecified address"),
        ("https://224.0.0.1/hooks", "a multicast address"),
        ("https://user:pass@93.184.216.34/hooks", "user name and password"),
    ],
)
def test_an_admin_cannot_save_a_target_that_is_not_https_at_a_public_address(admin_client, production_rules, url, says):
    response = admin_client.post(ADD_URL, add_form(url))
    assert response.status_code == 200, "the form was accepted"
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["url"] and says in errors["url"][0], errors
    assert not DownstreamTarget.objects.exists()


@pytest.mark.django_db
def test_every_address_of_a_name_is_checked_when_saved(admin_client, production_rules, fake_dns):
    fake_dns["hooks.example.com"] = ["93.184.216.34", "10.0.0.7"]
    response = admin_client.post(ADD_URL, add_form("https://hooks.example.com/in"))
    assert response.status_code == 200, "the form was accepted"
    [error] = response.context["adminform"].form.errors["url"]
    assert "hooks.example.com resolves to 10.0.0.7, a private address" in error

    fake_dns["hooks.example.com"] = ["93.184.216.34", "93.184.216.35"]
    response = admin_client.post(ADD_URL, add_form("https://hooks.example.com/in"))
    assert response.status_code == 302
    assert DownstreamTarget.objects.get().url == "https://hooks.example.com/in"


# ---------------------------------------------------------------------------
# Sent: the address is checked when the connection is made, and that address is the one used
# ---------------------------------------------------------------------------
pytestmark_live = pytest.mark.django_db(transaction=True)


@pytestmark_live
def test_a_name_that_points_to_loopback_only_when_sending_is_refused_at_connect_time(
    journey, sandbox, receiver, admin_client, production_rules, fake_dns
):
    production_rules.DOWNSTREAM_ALLOW_HTTP = True  # the receiver speaks plain http; addresses stay checked
    url = f"http://hooks.rebind.test:{port_of(receiver)}/hooks"
    fake_dns["hooks.rebind.test"] = ["93.184.216.34"]  # public when saved ...
    assert admin_client.post(ADD_URL, add_form(url)).status_code == 302
    fake_dns["hooks.rebind.test"] = ["127.0.0.1"]  # ... this machine when the delivery goes
    journey.execute(subscriber())
    run_queued()
    assert receiver.attempts == []
    delivery = Delivery.objects.get()
    assert delivery.status == "dead" and delivery.last_status_code is None
    assert delivery.last_error == "refused to connect: hooks.rebind.test resolves to 127.0.0.1, a loopback address"
    target = DownstreamTarget.objects.get()
    assert target.consecutive_failures == 0 and target.paused_until is None  # permanent, not an outage


@pytestmark_live
def test_plain_http_is_refused_when_sending(journey, sandbox, receiver, production_rules):
    production_rules.DOWNSTREAM_ALLOW_LOOPBACK = True
    DownstreamTarget.objects.create(name="legacy", url=receiver.url, secret=SECRET)  # saved before the rule
    journey.execute(subscriber())
    run_queued()
    assert receiver.attempts == []
    delivery = Delivery.objects.get()
    assert delivery.status == "dead"
    assert delivery.last_error == "refused to send to 127.0.0.1 over plain http: targets must use https"


@pytestmark_live
def test_redirects_are_not_followed(journey, sandbox, settings):
    with WebhookReceiver(SECRET) as first, WebhookReceiver(SECRET) as elsewhere:
        first.redirect_to = elsewhere.url
        DownstreamTarget.objects.create(name="crm", url=first.url, secret=SECRET)
        journey.execute(subscriber())
        run_queued()
        assert len(first.attempts) == 1 and elsewhere.attempts == []
    delivery = Delivery.objects.get()
    assert delivery.status == "dead" and delivery.last_status_code == 307
    assert delivery.last_error == "the endpoint answered 307 (0 bytes); redirects are not followed"


def _make_certificates(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for ``name`` signed by it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.pem", "leaf.key", "leaf.csr", "leaf.pem"))
    extensions = directory / "leaf.ext"
    extensions.write_text(
        f"subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\n"
    )
    run = {"check": True, "capture_output": True, "timeout": 60}
    subprocess.run(  # noqa: S603 - fixed argv
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", "/CN=hub test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        **run,
    )  # fmt: skip
    subprocess.run(  # noqa: S603 - fixed argv
        [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={name}"], **run
    )
    subprocess.run(  # noqa: S603 - fixed argv
        [openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", extensions],
        **run,
    )  # fmt: skip
    return ca, cert, key


@pytestmark_live
def test_https_goes_to_the_checked_address_with_the_certificate_checked_for_the_name(
    journey, sandbox, settings, fake_dns, tmp_path, monkeypatch
):
    settings.DOWNSTREAM_ALLOW_HTTP = False
    settings.DOWNSTREAM_ALLOW_LOOPBACK = True  # the TLS receiver is on this machine
    ca, cert, key = _make_certificates(tmp_path, "hooks.pinned.test")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
    fake_dns["hooks.pinned.test"] = fake_dns["other.pinned.test"] = ["127.0.0.1"]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with WebhookReceiver(SECRET) as receiver:
        receiver.server.socket = context.wrap_socket(receiver.server.socket, server_side=True)
        port = port_of(receiver)
        DownstreamTarget.objects.create(name="crm", url=f"https://hooks.pinned.test:{port}/hooks", secret=SECRET)
        # Same address, a name the certificate is not for: verification still runs against the name.
        DownstreamTarget.objects.create(name="wrong", url=f"https://other.pinned.test:{port}/hooks", secret=SECRET)
        journey.execute(subscriber())
        run_queued(include_delayed=False)
        assert receiver.bad_signatures == 0
        assert [m["data"]["changeId"] for m in receiver.received] == [ChangeEvent.objects.get().pk]
    assert Delivery.objects.get(target__name="crm").status == "delivered"
    wrong = Delivery.objects.get(target__name="wrong")
    assert wrong.status == "pending" and wrong.last_error == "connection failed: SSLError"


# ---------------------------------------------------------------------------
# Only administrators change where a target sends and how it signs
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_steward_cannot_change_a_targets_url_or_secret(client):
    target = DownstreamTarget.objects.create(name="crm", url="https://93.184.216.34/hooks", secret=SECRET)
    steward = User.objects.create_user("steward", password="pw-for-the-test", is_staff=True)
    steward.groups.add(Group.objects.get(name=STEWARD))
    client.force_login(steward)
    change_url = f"/admin/downstream/downstreamtarget/{target.pk}/change/"

    evil = {"url": "https://203.0.113.9/collect", "secret": "whsec_" + "A" * 43 + "="}
    response = client.post(change_url, {**add_form("", name="crm"), **evil, "enabled": ""})
    assert response.status_code == 302
    target.refresh_from_db()
    assert (target.url, target.secret) == ("https://93.184.216.34/hooks", SECRET)
    assert target.enabled is False  # pausing a target stays a steward's job

    page = client.get(change_url).content.decode()
    assert 'name="url"' not in page and 'name="secret"' not in page and SECRET not in page
    assert client.get(ADD_URL).status_code == 403
    assert client.post(ADD_URL, add_form("https://93.184.216.34/new", name="new")).status_code == 403
    assert DownstreamTarget.objects.count() == 1


@pytest.mark.django_db
def test_a_viewer_does_not_see_the_signing_secret(client):
    target = DownstreamTarget.objects.create(name="crm", url="https://93.184.216.34/hooks", secret=SECRET)
    viewer = User.objects.create_user("viewer", password="pw-for-the-test", is_staff=True)
    viewer.groups.add(Group.objects.get(name=VIEWER))
    client.force_login(viewer)
    response = client.get(f"/admin/downstream/downstreamtarget/{target.pk}/change/")
    assert response.status_code == 200 and "https://93.184.216.34/hooks" in response.content.decode()
    assert SECRET not in response.content.decode()


@pytest.mark.django_db
def test_an_admin_changes_the_url_through_the_same_form(admin_client, production_rules):
    target = DownstreamTarget.objects.create(name="crm", url="https://93.184.216.34/hooks", secret=SECRET)
    change_url = f"/admin/downstream/downstreamtarget/{target.pk}/change/"
    assert 'name="url"' in admin_client.get(change_url).content.decode()
    response = admin_client.post(change_url, add_form("https://93.184.216.35/hooks"))
    assert response.status_code == 302
    target.refresh_from_db()
    assert target.url == "https://93.184.216.35/hooks"


# ---------------------------------------------------------------------------
# Of an answer, only its status code and size are kept
# ---------------------------------------------------------------------------
@pytestmark_live
def test_no_answer_body_is_stored_or_shown(journey, sandbox, receiver, admin_client):
    leaked = b'{"internal_api_token": "sk_live_SECRET-ANSWER-7f3a9c", "note": "from the service at that URL"}'
    receiver.answer_body = leaked
    target = DownstreamTarget.objects.create(name="crm", url=receiver.url, secret=SECRET)

    receiver.ok_status = 200  # delivered, with a body
    journey.execute(subscriber(key="P0", email="p0@example.com"))
    run_queued()
    receiver.fail_status, receiver.fail_next = 400, 1  # refused for good
    journey.execute(subscriber(key="P1", email="p1@example.com"))
    run_queued()
    receiver.fail_status, receiver.fail_next = 503, 1000  # an outage, until the target pauses
    for i in range(2, 8):
        journey.execute(subscriber(key=f"P{i}", email=f"p{i}@example.com"))
    run_queued(include_delayed=False)

    target.refresh_from_db()
    assert target.paused_until is not None
    delivered = Delivery.objects.get(status="delivered")
    dead = Delivery.objects.get(status="dead")

    secret = "SECRET-ANSWER"
    stored = [
        *Delivery.objects.values_list("last_error", flat=True),
        target.last_error,
        target.pause_reason,
        *SyncStep.objects.values_list("detail", flat=True),
        *(str(d) for d in SyncStep.objects.values_list("data", flat=True)),
    ]
    assert not [text for text in stored if secret in text]
    pages = [
        "/admin/downstream/delivery/",
        f"/admin/downstream/delivery/{dead.pk}/change/",
        f"/admin/downstream/delivery/{delivered.pk}/change/",
        "/admin/downstream/downstreamtarget/",
        f"/admin/downstream/downstreamtarget/{target.pk}/change/",
    ]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200 and secret not in response.content.decode(), page
    # What is kept instead: the status and the size.
    assert (delivered.last_status_code, delivered.last_response_bytes) == (200, len(leaked))
    assert (dead.last_status_code, dead.last_response_bytes) == (400, len(leaked))
    assert dead.last_error == f"the endpoint refused with 400 ({len(leaked)} bytes)"
    assert target.last_error == f"the endpoint answered 503 ({len(leaked)} bytes)"


# ---------------------------------------------------------------------------
# The switches: off in production, on with HUB_DEBUG=true unless set
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"HUB_DEBUG": "false"}, "False False"),
        ({"HUB_DEBUG": "true"}, "True True"),
        ({"HUB_DEBUG": "true", "HUB_DOWNSTREAM_ALLOW_LOOPBACK": "false"}, "True False"),
        ({"HUB_DEBUG": "false", "HUB_DOWNSTREAM_ALLOW_HTTP": "true"}, "True False"),
    ],
)
def test_the_development_switches(env, expected, settings):
    # A named database: without HUB_DEBUG the hub refuses the embedded one the tests may use.
    environment = {**os.environ, "HUB_SECRET_KEY": "k" * 60, "DATABASE_URL": settings.EFFECTIVE_DATABASE_URL, **env}
    environment.pop("HUB_TESTING", None)
    result = subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; "
         "print(settings.DOWNSTREAM_ALLOW_HTTP, settings.DOWNSTREAM_ALLOW_LOOPBACK)"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**environment, "DJANGO_SETTINGS_MODULE": "hub.settings"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_a_proxy_in_the_environment_is_not_used_for_deliveries(monkeypatch):
    """A proxy resolves the name after the hub's check: deliveries never go through one."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    session = delivery_session()
    assert session.merge_environment_settings("https://93.184.215.14/hook", {}, None, None, None)["proxies"] == {}
