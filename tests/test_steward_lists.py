"""The steward's lists and record page as read at 1366 px: short master IDs, consent in words,
a readable history, contact points naming their source record, one date format, no actions a
steward must never take."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from customers.models import CrossReference, Individual
from customers.stewardship import steward_edit
from integrations.models import InboundEvent, SyncRun
from tests.test_mdm import cim, ingest

pytestmark = pytest.mark.django_db


@pytest.fixture
def steward(client):
    user = get_user_model().objects.create_superuser("lead", "", "pw-for-tests")
    client.force_login(user)
    return client


@pytest.fixture
def household(sandbox):
    ann = ingest("POS", "p-1", cim("Ann", "Jones", email="home@example.com"))
    tom = ingest("POS", "p-2", cim("Tom", "Jones", email="tom@example.com", phone="+1 415 555 0100"))
    return ann, tom


def _result_rows(html: str) -> list[str]:
    body = html.split('id="result_list"', 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr[^>]*>.*?</tr>", body.split("<tbody>", 1)[1], flags=re.S)


def test_golden_record_list_shows_a_short_id_name_email_sources_and_consent_in_words(steward, household):
    ann, tom = household
    Individual.objects.filter(pk=tom.pk).update(do_not_market_since="2026-03-01T10:00:00Z")
    html = steward.get(reverse("admin:customers_individual_changelist")).content.decode()
    rows = _result_rows(html)
    ann_row = next(r for r in rows if ann.master_id in r)
    tom_row = next(r for r in rows if tom.master_id in r)
    # The full ID is in the link's title and the copy button, never as the cell's text.
    assert f'title="{ann.master_id}">…{ann.master_id[-8:]}</a>' in ann_row
    assert f">{ann.master_id}<" not in ann_row
    assert f'data-copy="{ann.master_id}"' in ann_row
    assert reverse("admin:customers_individual_change", args=[ann.pk]) in ann_row
    assert "Ann Jones" in ann_row and "home@example.com" in ann_row and "POS" in ann_row
    # Consent as words: no red cross (the admin's boolean icon) for the ordinary case.
    assert "icon-no" not in ann_row and "icon-yes" not in tom_row
    assert "No opt-out" in ann_row and "Do not market" in tom_row
    assert "customers/copy-id.js" in html and "customers/steward.css" in html


def test_sync_run_event_and_cross_reference_lists_show_short_linked_ids(steward, household):
    ann, _ = household
    for name in ("integrations_syncrun", "integrations_inboundevent", "customers_crossreference"):
        html = steward.get(reverse(f"admin:{name}_changelist")).content.decode()
        row = next(r for r in _result_rows(html) if ann.master_id in r)
        assert f"…{ann.master_id[-8:]}</a>" in row, name
        assert f">{ann.master_id}<" not in row, name


def test_history_reads_before_to_after_with_the_actor_and_source_record_linked(steward, household):
    ann, _ = household
    user = get_user_model().objects.get(username="lead")
    from django.db import transaction

    with transaction.atomic():
        steward_edit(ann, {"first_name": "Anne"}, actor="user:lead", actor_user=user)
    html = steward.get(reverse("admin:customers_individual_change", args=[ann.pk])).content.decode()
    timeline = html.split('id="timeline"', 1)[1]
    # No Python dict text, no internal "CrossReference #6", no raw "sync-run:7".
    assert "{'" not in timeline and "CrossReference #" not in timeline and "by sync-run:" not in timeline
    assert re.search(r"<th>first name</th><td class=\"before\">Ann</td>.*?<td class=\"after\">Anne</td>", timeline)
    xref = CrossReference.objects.get(external_id="p-1")
    assert (
        f'<a href="{reverse("admin:customers_crossreference_change", args=[xref.pk])}">source record POS p-1</a>'
        in (timeline)
    )
    run = SyncRun.objects.filter(external_id="p-1").first()
    assert f'<a href="{reverse("admin:integrations_syncrun_change", args=[run.pk])}">sync run #{run.pk}</a>' in timeline
    assert ">lead</a>" in timeline and "/admin/customers/historyentry/?q=user%3Alead" in timeline


def test_contact_points_name_their_source_record(steward, household):
    ann, _ = household
    html = steward.get(reverse("admin:customers_individual_change", args=[ann.pk])).content.decode()
    points = html.split("contact_points-group", 1)[1].split("cross_references-group", 1)[0]
    xref = CrossReference.objects.get(external_id="p-1")
    assert f'<a href="{reverse("admin:customers_crossreference_change", args=[xref.pk])}">POS p-1</a>' in points


def test_the_record_page_uses_one_date_format(steward, household):
    ann, _ = household
    html = steward.get(reverse("admin:customers_individual_change", args=[ann.pk])).content.decode()
    assert not re.search(r"\d(a\.m\.|p\.m\.)|\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\.? \d", html)
    assert ann.created_at.strftime("%Y-%m-%d %H:%M") in html
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", html.split("<body", 1)[1])


def test_the_history_button_opens_the_records_own_timeline(steward, household):
    ann, _ = household
    xref = CrossReference.objects.get(external_id="p-1")
    record = reverse("admin:customers_individual_change", args=[ann.pk]) + "#timeline"
    answer = steward.get(reverse("admin:customers_individual_history", args=[ann.pk]))
    assert answer.status_code == 302 and answer["Location"] == record
    answer = steward.get(reverse("admin:customers_crossreference_history", args=[xref.pk]))
    assert answer.status_code == 302 and answer["Location"] == record


def test_no_add_delete_or_add_another_on_records_sources_runs_and_events(steward, household):
    ann, _ = household
    xref = CrossReference.objects.get(external_id="p-1")
    run = SyncRun.objects.filter(external_id="p-1").first()
    event = InboundEvent.objects.filter(external_id="p-1").first()
    pages = {
        "customers_individual": ann.pk,
        "customers_crossreference": xref.pk,
        "integrations_syncrun": run.pk,
        "integrations_inboundevent": event.pk,
    }
    for name, pk in pages.items():
        assert steward.get(reverse(f"admin:{name}_add")).status_code == 403, name
        assert steward.get(reverse(f"admin:{name}_delete", args=[pk])).status_code == 403, name
        change = steward.get(reverse(f"admin:{name}_change", args=[pk])).content.decode()
        assert "_addanother" not in change and "deletelink" not in change, name
        listing = steward.get(reverse(f"admin:{name}_changelist")).content.decode().split('id="content-main"')[1]
        assert "delete_selected" not in listing and "addlink" not in listing, name
    # Erasure stays, as its own action.
    assert "erase" in steward.get(reverse("admin:customers_individual_changelist")).content.decode()


def test_a_created_record_lists_only_the_values_it_has(steward, household):
    ann, _ = household
    html = steward.get(reverse("admin:customers_individual_change", args=[ann.pk])).content.decode()
    timeline = html.split('id="timeline"', 1)[1]
    assert '<td class="before">—</td><td class="arrow">&rarr;</td><td class="after">—</td>' not in timeline
