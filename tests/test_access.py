"""Who may do what, tried as an attacker would over real HTTP: ingest keys × sources, roles × admin actions.

Each test here failed on the code before source-bound keys and declared action permissions:
any key could send as STEWARD or MARKETING_CLOUD, a carried master ID moved a linked record
onto another person, and a Viewer could revoke every API key.
"""

from __future__ import annotations

import io
import re
import uuid

import pytest
import requests
from axes.models import AccessAttempt
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from django_q.models import Task

from customers.models import (
    ChangeEvent,
    CrossReference,
    HistoryEntry,
    Individual,
    MatchCandidate,
    MatchRule,
    SurvivorshipRule,
)
from customers.resolution.engine import CARRIED_MASTER_ID_RULE
from customers.stewardship import steward_edit
from hub.roles import STEWARD, VIEWER
from integrations.choices import EventStatus
from integrations.downstream.models import Delivery, DownstreamTarget
from integrations.marketing_cloud.models import ReconciliationState
from integrations.models import ApiClient, ConnectorState, DeadLetter, InboundEvent, SyncRun
from tests.queue import run_queued
from tests.test_mdm import cim

pytestmark = pytest.mark.django_db(transaction=True)


def _event(event_id: str, source: str, record_id: str, individual: dict) -> dict:
    return {
        "id": event_id,
        "source": source,
        "occurredAt": "2026-11-20T10:00:00Z",
        "individual": {"id": record_id, **individual},
    }


def _key_session(live_server, name: str, sources: list[str]) -> requests.Session:
    _, key = ApiClient.issue(name, ["ingest", "read"], sources)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    session.base_url = live_server.url  # type: ignore[attr-defined]
    return session


def _post(session: requests.Session, events: list[dict]) -> requests.Response:
    return session.post(f"{session.base_url}/api/v1/events", json={"events": events}, timeout=10)


# -- ingest keys × sources ----------------------------------------------------------------------


@pytest.mark.parametrize("source", ["B2C_COMMERCE", "STEWARD", "MARKETING_CLOUD", "MDM", "GLOBAL"])
def test_a_key_sends_only_for_its_own_sources_and_never_a_reserved_one(live_server, source):
    pos = _key_session(live_server, "pos", ["POS"])
    batch = [
        _event("ok-1", "POS", "p-1", cim("Ann", "Lee", email="ann@example.com")),
        _event("bad-1", source, "x-1", cim("Eve", "Mallory", email="eve@example.com")),
    ]
    response = _post(pos, batch)
    assert response.status_code == 403, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == ["events[1].source"]
    assert source in errors[0]["message"]
    # All or nothing: the allowed event of the batch is not stored either; the refusal is kept.
    assert not InboundEvent.objects.exclude(status=EventStatus.REJECTED).exists()
    assert InboundEvent.objects.filter(status=EventStatus.REJECTED).count() == 1


def test_a_key_for_every_system_still_cannot_overwrite_a_stewards_edit(live_server):
    pos = _key_session(live_server, "pos", ["POS"])
    assert _post(pos, [_event("e1", "POS", "p-1", cim("Ann", "Lee", email="ann@example.com"))]).status_code == 200
    run_queued()
    golden = Individual.objects.get()
    steward_edit(golden, {"first_name": "Annabel"}, actor="user:stella")
    forged = _event("e2", "STEWARD", golden.master_id, cim("Mallory", "Lee", email="ann@example.com"))
    assert _post(pos, [forged]).status_code == 403
    run_queued()
    golden.refresh_from_db()
    assert golden.first_name == "Annabel"


@pytest.mark.django_db
def test_keys_cannot_be_bound_to_a_reserved_source():
    with pytest.raises(ValidationError):
        ApiClient.issue("forger", ["ingest"], ["STEWARD"])
    with pytest.raises(CommandError, match="reserved"):
        call_command("create_api_key", "forger", "--source", "MARKETING_CLOUD", stdout=io.StringIO())
    with pytest.raises(CommandError, match="--source"):
        call_command("create_api_key", "unbound", "--scope", "ingest", stdout=io.StringIO())
    assert not ApiClient.objects.exists()


def test_a_carried_master_id_does_not_move_a_linked_record_it_goes_to_review(live_server):
    pos = _key_session(live_server, "pos", ["POS"])
    batch = [
        _event("e1", "POS", "p-1", cim("Ann", "Lee", email="ann@example.com", phone="+1 415 555 0101")),
        _event("e2", "POS", "p-2", cim("Zed", "Quinn", email="zed@example.com", phone="+1 415 555 0199")),
    ]
    assert _post(pos, batch).status_code == 200
    run_queued()
    ann = CrossReference.objects.get(system="POS", external_id="p-1").individual
    zed = CrossReference.objects.get(system="POS", external_id="p-2").individual
    hijack = cim("Zed", "Quinn", email="attacker@example.com")
    hijack["externalIds"] = [{"externalId": zed.master_id, "externalIdType": "MDM"}]
    assert _post(pos, [_event("e3", "POS", "p-1", hijack)]).status_code == 200
    run_queued()
    assert CrossReference.objects.get(system="POS", external_id="p-1").individual_id == ann.pk
    zed.refresh_from_db()
    assert zed.first_name == "Zed" and not zed.contact_points.filter(email_address__icontains="attacker").exists()
    review = MatchCandidate.objects.get(status="open")
    assert {review.left_id, review.right_id} == {ann.pk, zed.pk}
    assert review.rule == CARRIED_MASTER_ID_RULE
    assert zed.master_id in review.comparison["note"]


def test_a_new_record_carrying_a_master_id_joins_only_when_the_rules_agree(live_server):
    pos = _key_session(live_server, "pos", ["POS"])
    ann_cim = cim("Ann", "Lee", email="ann@example.com", phone="+1 415 555 0101")
    assert _post(pos, [_event("e1", "POS", "p-1", ann_cim)]).status_code == 200
    run_queued()
    ann = Individual.objects.get()
    same_person = cim("Ann", "Lee", email="ann@example.com")
    same_person["externalIds"] = [{"externalId": ann.master_id, "externalIdType": "MDM"}]
    stranger = cim("Mallory", "Evil", email="attacker@example.com")
    stranger["externalIds"] = [{"externalId": ann.master_id, "externalIdType": "GLOBAL"}]
    assert (
        _post(pos, [_event("e2", "POS", "p-2", same_person), _event("e3", "POS", "p-3", stranger)]).status_code == 200
    )
    run_queued()
    assert CrossReference.objects.get(system="POS", external_id="p-2").individual_id == ann.pk
    mallory = CrossReference.objects.get(system="POS", external_id="p-3").individual
    assert mallory.pk != ann.pk
    ann.refresh_from_db()
    assert ann.first_name == "Ann" and not ann.contact_points.filter(email_address__icontains="attacker").exists()
    review = MatchCandidate.objects.get(status="open")
    assert {review.left_id, review.right_id} == {ann.pk, mallory.pk} and review.rule == CARRIED_MASTER_ID_RULE
    assert "do not merge" in review.comparison["note"]


# -- roles × admin actions -----------------------------------------------------------------------

# Every action of every registered model admin, and the roles that may run it (a superuser,
# "admin", may run them all). A new action fails the completeness test until it is classified.
STEWARD_MAY = {
    ("customers.Individual", "resync"),
    ("customers.Individual", "merge_two"),
    ("customers.Individual", "recompute"),
    ("customers.MatchCandidate", "merge_selected"),
    ("customers.MatchCandidate", "not_a_match_selected"),
    ("customers.MatchCandidate", "skip_selected"),
    ("downstream.Delivery", "replay_dead"),
    ("downstream.DownstreamTarget", "resume"),
    ("integrations.ConnectorState", "close_breaker"),
    ("integrations.DeadLetter", "replay"),
    ("marketing_cloud.ReconciliationState", "run_now"),
    ("marketing_cloud.SubscriberStatusSync", "run_now"),
    ("marketing_cloud.UnsubscribeWriteback", "retry_now"),
    ("customers.Individual", "opt_out"),
}
ADMIN_ONLY = {
    ("customers.Individual", "erase"),
    ("marketing_cloud.ContactDeletion", "retry_now"),
    ("integrations.ApiClient", "revoke"),
    ("django_q.Success", "resubmit_selected_tasks"),
    ("django_q.Failure", "resubmit_selected_tasks"),
    ("axes.AccessAttempt", "cleanup_expired_attempts"),
}


# Rows no one deletes from the admin, not even a superuser: the audit trails, golden records
# (merged or erased instead), their source records (marked invalid or unmerged instead), review
# pairs (decided instead), API keys (revoked instead), inbound events and sync runs (the intake's trail).
NEVER_DELETED = {
    "auditlog.LogEntry",
    "customers.CrossReference",
    "customers.HistoryEntry",
    "customers.Individual",
    "customers.MatchCandidate",
    "customers.MatcherModel",  # versions are history: every decision names the one that made it
    "integrations.ApiClient",
    "integrations.InboundEvent",
    "integrations.SyncRun",
    # A bulk request in flight holds its rows (pending, no due time): deleting it would strand them.
    "marketing_cloud.BulkWriteback",
}


def _every_action() -> set[tuple[str, str]]:
    return {
        (model._meta.label, name)
        for model, model_admin in admin.site._registry.items()
        for _, name, _ in model_admin._get_base_actions()
    }


@pytest.mark.django_db
def test_every_admin_action_is_classified_and_declares_a_permission():
    actions = _every_action()
    deletes = {pair for pair in actions if pair[1] == "delete_selected"}
    assert actions - deletes == STEWARD_MAY | ADMIN_ONLY
    for model_admin in admin.site._registry.values():
        for func, name, _ in model_admin._get_base_actions():
            assert getattr(func, "allowed_permissions", None), (type(model_admin).__name__, name)


class AdminBrowser:
    """A logged-in admin user over real HTTP: the login form, the CSRF cookie, posted actions."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        login = f"{base_url}{reverse('admin:login')}"
        self.session.get(login, timeout=10)
        answer = self.session.post(
            login,
            data={"username": username, "password": password, "csrfmiddlewaretoken": self._csrf(), "next": "/admin/"},
            headers={"Referer": login},
            timeout=10,
        )
        assert answer.status_code == 200 and "/admin/login/" not in answer.url, answer.url

    def _csrf(self) -> str:
        return self.session.cookies["csrftoken"]

    def action(self, label: str, action: str, selected: list[int | str]) -> requests.Response:
        app, model = label.lower().split(".")
        url = f"{self.base_url}{reverse(f'admin:{app}_{model}_changelist')}"
        return self.session.post(
            url,
            data={
                "action": action,
                "index": "0",
                "_selected_action": [str(pk) for pk in selected],
                "csrfmiddlewaretoken": self._csrf(),
            },
            headers={"Referer": url},
            allow_redirects=False,
            timeout=30,
        )


def _user(username: str, group: str | None) -> tuple[str, str]:
    password = f"pw-{uuid.uuid4().hex}"
    users = get_user_model().objects
    if group is None:
        users.create_superuser(username, "", password)
    else:
        user = users.create_user(username, password=password, is_staff=True)
        user.groups.add(Group.objects.get(name=group))
    return username, password


def _one_of_each(live_server) -> dict[str, list[int | str]]:
    """A row for every model with an action (two golden records for the merge)."""
    pos = _key_session(live_server, "pos", ["POS"])
    batch = [
        _event("e1", "POS", "p-1", cim("Ann", "Lee", email="ann@example.com", phone="+1 415 555 0101")),
        _event("e2", "POS", "p-2", cim("Bob", "Ray", email="bob@example.com", phone="+1 415 555 0102")),
    ]
    assert _post(pos, batch).status_code == 200
    run_queued()
    ann, bob = Individual.objects.order_by("pk")
    candidate = MatchCandidate.objects.create(left=ann, right=bob, rule="test pair")
    run = SyncRun.objects.filter(status__in=["succeeded", "waiting"]).first() or SyncRun.objects.first()
    dead = DeadLetter.objects.create(run=run, event=run.event, stage="process", reason="test")
    target = DownstreamTarget.objects.create(name="crm", url="https://crm.example.com/hook", secret="s" * 32)
    delivery = Delivery.objects.create(
        target=target, change=ChangeEvent.objects.first(), master_id=ann.master_id, status="dead"
    )
    connector = ConnectorState.objects.get_or_create(system="MARKETING_CLOUD")[0]
    reconciliation = ReconciliationState.objects.get_or_create(de_key="Individual")[0]
    now = timezone.now()
    succeeded = Task.objects.create(
        id=uuid.uuid4().hex, name="ok", func="math.floor", args=(1.5,), started=now, stopped=now, success=True
    )
    failed = Task.objects.create(
        id=uuid.uuid4().hex, name="ko", func="math.floor", args=("x",), started=now, stopped=now, success=False
    )
    attempt = AccessAttempt.objects.create(
        username="nobody", ip_address="203.0.113.9", user_agent="t", failures_since_start=1, get_data="", post_data=""
    )
    return {
        "customers.Individual": [ann.pk, bob.pk],
        "customers.MatchCandidate": [candidate.pk],
        "downstream.Delivery": [delivery.pk],
        "downstream.DownstreamTarget": [target.pk],
        "integrations.ConnectorState": [connector.pk],
        "integrations.DeadLetter": [dead.pk],
        "integrations.ApiClient": [ApiClient.objects.get(name="pos").pk],
        "marketing_cloud.ReconciliationState": [reconciliation.pk],
        "django_q.Success": [succeeded.pk],
        "django_q.Failure": [failed.pk],
        "axes.AccessAttempt": [attempt.pk],
    }


def test_every_role_tries_every_admin_action(live_server):
    rows = _one_of_each(live_server)
    browsers = {
        "viewer": AdminBrowser(live_server.url, *_user("vera", VIEWER)),
        "steward": AdminBrowser(live_server.url, *_user("stella", STEWARD)),
        "admin": AdminBrowser(live_server.url, *_user("root", None)),
    }
    outcomes: dict[tuple[str, str, str], int] = {}
    # Destructive actions last, so every role tries the others on the same rows.
    order = sorted(_every_action(), key=lambda pair: (pair[1] in {"erase", "revoke"}, pair))
    for role, browser in browsers.items():
        for label, action in order:
            selected = rows.get(label) or [0]
            if action == "erase":
                selected = selected[1:]  # Bob only: Ann stays for the checks below
            outcomes[(role, label, action)] = browser.action(label, action, selected).status_code
    wrong = []
    for (role, label, action), code in sorted(outcomes.items()):
        pair = (label, action)
        allowed = (role == "admin" and not (action == "delete_selected" and label in NEVER_DELETED)) or (
            role == "steward" and pair in STEWARD_MAY
        )
        if allowed != (code != 403) or code >= 500:
            wrong.append(f"{role} {label}.{action}: {code} ({'may' if allowed else 'may not'})")
    assert not wrong, "\n".join(wrong)
    # What a refused action would have done did not happen, and what the admin ran did.
    pos_key = ApiClient.objects.get(name="pos")
    assert pos_key.revoked_at is not None  # revoked by the admin, last
    assert Individual.objects.filter(erased_at__isnull=False).count() <= 1
    assert HistoryEntry.objects.filter(actor="user:vera").count() == 0


def test_a_viewer_cannot_revoke_an_api_key(live_server):
    client, _ = ApiClient.issue("pos", ["ingest"], ["POS"])
    viewer = AdminBrowser(live_server.url, *_user("vera", VIEWER))
    assert viewer.action("integrations.ApiClient", "revoke", [client.pk]).status_code == 403
    steward = AdminBrowser(live_server.url, *_user("stella", STEWARD))
    assert steward.action("integrations.ApiClient", "revoke", [client.pk]).status_code == 403
    change = f"{live_server.url}{reverse('admin:integrations_apiclient_change', args=[client.pk])}"
    edited = steward.session.post(
        change,
        data={"name": "pos", "scopes": "ingest", "sources": "POS,SALESFORCE", "csrfmiddlewaretoken": steward._csrf()},
        headers={"Referer": change},
        allow_redirects=False,
        timeout=10,
    )
    assert edited.status_code == 403
    client.refresh_from_db()
    assert client.revoked_at is None and client.sources == ["POS"]


def test_an_admin_binds_a_key_in_the_admin_and_the_change_has_its_before_and_after(live_server):
    client, _ = ApiClient.issue("pos", ["ingest"], ["POS"])
    root = AdminBrowser(live_server.url, *_user("root", None))
    change = f"{live_server.url}{reverse('admin:integrations_apiclient_change', args=[client.pk])}"

    def save(sources: str) -> requests.Response:
        return root.session.post(
            change,
            data={"name": "pos", "scopes": "ingest", "sources": sources, "csrfmiddlewaretoken": root._csrf()},
            headers={"Referer": change},
            allow_redirects=False,
            timeout=10,
        )

    refused = save("POS,STEWARD")
    assert refused.status_code == 200 and "reserved" in refused.text
    assert save("POS,SALESFORCE").status_code == 302
    client.refresh_from_db()
    assert client.sources == ["POS", "SALESFORCE"]
    history = root.session.get(f"{change.rsplit('/change/', 1)[0]}/auditlog/", timeout=10)
    assert history.status_code == 200 and "SALESFORCE" in history.text and "root" in history.text


def test_rule_changes_keep_their_before_and_after(live_server):
    rule = MatchRule.objects.order_by("pk").first()
    survivorship = SurvivorshipRule.objects.order_by("pk").first()
    steward = AdminBrowser(live_server.url, *_user("stella", STEWARD))
    changelist = f"{live_server.url}{reverse('admin:customers_survivorshiprule_changelist')}"
    page = steward.session.get(changelist, timeout=10).text
    total = int(re.search(r'name="form-TOTAL_FORMS" value="(\d+)"', page).group(1))
    data = {"form-TOTAL_FORMS": str(total), "form-INITIAL_FORMS": str(total), "_save": "Save"}
    for i, row in enumerate(SurvivorshipRule.objects.order_by("attribute")):
        data[f"form-{i}-id"] = str(row.pk)
        data[f"form-{i}-strategy"] = "most_recent" if row.pk == survivorship.pk else row.strategy
        data[f"form-{i}-source_priority"] = row.source_priority
    data["csrfmiddlewaretoken"] = steward._csrf()
    saved = steward.session.post(changelist, data=data, headers={"Referer": changelist}, timeout=10)
    assert saved.status_code == 200
    survivorship.refresh_from_db()
    assert survivorship.strategy == "most_recent"
    history = steward.session.get(
        f"{live_server.url}{reverse('admin:customers_survivorshiprule_changelist')}{survivorship.pk}/auditlog/",
        timeout=10,
    )
    assert history.status_code == 200 and "most_recent" in history.text and "stella" in history.text
    assert rule is not None


# -- logins and the activity page ---------------------------------------------------------------


def test_admin_logins_are_throttled_after_repeated_failures(live_server, settings):
    username, password = _user("root", None)
    session = requests.Session()
    login = f"{live_server.url}{reverse('admin:login')}"

    def attempt(secret: str) -> requests.Response:
        session.get(login, timeout=10)
        return session.post(
            login,
            data={"username": username, "password": secret, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
            headers={"Referer": login},
            allow_redirects=False,
            timeout=10,
        )

    codes = [attempt(f"guess-{i}").status_code for i in range(settings.AXES_FAILURE_LIMIT)]
    assert codes[:-1] == [200] * (settings.AXES_FAILURE_LIMIT - 1)  # the form again, with its error
    # Locked out now: even the right password is refused, and no session is made.
    locked = attempt(password)
    assert locked.status_code == 429 and "sessionid" not in session.cookies


def test_the_activity_page_runs_no_inline_script_and_pins_postmonger(live_server):
    page = requests.get(f"{live_server.url}/api/v1/marketing-cloud/journey/index.html", timeout=10)
    assert page.status_code == 200
    policy = page.headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in policy and "default-src 'none'" in policy
    assert re.search(
        r'<script src="https://cdn\.jsdelivr\.net/npm/postmonger@0\.0\.16/postmonger\.min\.js" '
        r'integrity="sha384-[A-Za-z0-9+/]{64}" crossorigin="anonymous">',
        page.text,
    )
    assert "<script>" not in page.text and "<style>" not in page.text
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        assert requests.get(f"{live_server.url}{asset}", timeout=10).status_code == 200, asset


def test_a_targets_change_log_keeps_url_before_and_after_and_never_the_secret(live_server):
    target = DownstreamTarget.objects.create(name="crm", url="https://93.184.215.14/hook")
    old_secret = target.secret
    root = AdminBrowser(live_server.url, *_user("root", None))
    change = f"{live_server.url}{reverse('admin:downstream_downstreamtarget_change', args=[target.pk])}"
    page = root.session.get(change, timeout=10).text
    new_secret = "whsec_" + "A" * 43 + "="
    form = {
        "name": "crm",
        "kind": target.kind,
        "url": "https://93.184.215.15/hook",
        "secret": new_secret,
        "event_types": re.search(r'name="event_types"[^>]*>([^<]*)<', page).group(1).replace("&quot;", '"'),
        "enabled": "on",
        "csrfmiddlewaretoken": root._csrf(),
    }
    saved = root.session.post(change, data=form, headers={"Referer": change}, allow_redirects=False, timeout=10)
    assert saved.status_code == 302, re.findall(r'class="errorlist[^>]*>(.*?)</ul>', saved.text, re.S)
    history = root.session.get(change.replace("/change/", "/auditlog/"), timeout=10).text
    assert "93.184.215.14" in history and "93.184.215.15" in history and "root" in history
    assert old_secret not in history and new_secret not in history and "sha256:" in history
