"""The steward's admin pages for matching, merge, unmerge, pins, rules and their dry run."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from customers.models import CrossReference, HistoryEntry, Individual, MatchCandidate, MatchRule
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
    tom = ingest("POS", "p-2", cim("Tom", "Jones", email="home@example.com", phone="+1 415 555 0100"))
    return ann, tom


def test_record_page_shows_lineage_sources_timeline_and_sync_runs(steward, household):
    ann, _ = household
    page = steward.get(reverse("admin:customers_individual_change", args=[ann.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert 'class="lineage"' in html and "POS p-1" in html and "most recent" in html
    assert 'id="timeline"' in html and 'by <a href="/admin/integrations/syncrun/' in html
    assert "Sync runs that touched this record" in html and "/admin/integrations/syncrun/" in html
    assert "Unmerge" in html


def test_review_queue_merge_from_the_comparison_page(steward, household):
    ann, tom = household
    queue = steward.get(reverse("admin:customers_matchcandidate_changelist"), follow=True)
    assert queue.status_code == 200 and "Shared mailbox" in queue.content.decode()
    candidate = MatchCandidate.objects.get()
    review = steward.get(reverse("admin:customers_matchcandidate_change", args=[candidate.pk]))
    html = review.content.decode()
    assert 'class="differs"' in html and "Survives:" in html and "Merge (m)" in html
    steward.post(reverse("admin:customers_matchcandidate_change", args=[candidate.pk]), {"decision": "merge"})
    tom.refresh_from_db()
    candidate.refresh_from_db()
    assert tom.merged_into_id == ann.pk and candidate.status == "merged" and candidate.decided_by == "user:lead"
    entry = HistoryEntry.objects.filter(action="merge", individual=ann).get()
    assert entry.actor_user.username == "lead"


def test_not_a_match_and_bulk_skip_from_the_queue(steward, household):
    candidate = MatchCandidate.objects.get()
    steward.post(reverse("admin:customers_matchcandidate_change", args=[candidate.pk]), {"decision": "not_a_match"})
    candidate.refresh_from_db()
    assert candidate.status == "not_a_match"


def test_search_finds_old_master_ids_emails_and_phones(steward, household):
    ann, tom = household
    changelist = reverse("admin:customers_individual_changelist")
    for term in ("HOME@example.com", "(415) 555-0100", "p-2"):
        html = steward.get(changelist, {"q": term}).content.decode()
        assert tom.master_id in html, term
    from customers.stewardship import merge_individuals

    merge_individuals(ann, tom, actor="test")
    html = steward.get(changelist, {"q": tom.master_id}).content.decode()
    assert ann.master_id in html


def test_merge_two_found_by_search_then_unmerge_and_pin(steward, household):
    ann, tom = household
    preview = steward.get(reverse("admin:customers_individual_merge"), {"ids": f"{ann.pk},{tom.pk}"})
    assert preview.status_code == 200 and "after a merge (preview)" in preview.content.decode()
    steward.post(reverse("admin:customers_individual_merge"), {"ids": f"{ann.pk},{tom.pk}"})
    assert Individual.objects.get(pk=tom.pk).merged_into_id == ann.pk

    xref = CrossReference.objects.get(external_id="p-2")
    confirm = steward.get(reverse("admin:customers_crossreference_unmerge", args=[xref.pk]))
    assert confirm.status_code == 200 and "not a match" in confirm.content.decode()
    steward.post(reverse("admin:customers_crossreference_unmerge", args=[xref.pk]))
    xref.refresh_from_db()
    assert xref.individual_id != ann.pk

    pin_url = reverse("admin:customers_individual_pin", args=[ann.pk]) + "?attribute=first_name"
    assert steward.get(pin_url).status_code == 200
    steward.post(pin_url, {"attribute": "first_name", "value": "Annabel"})
    ann.refresh_from_db()
    assert ann.first_name == "Annabel" and ann.pins["first_name"]["by"] == "user:lead"


def test_an_edit_is_kept_as_the_stewards_own_source(steward, household):
    ann, _ = household
    url = reverse("admin:customers_individual_change", args=[ann.pk])
    data = {
        "salutation": "",
        "first_name": "Anne",
        "middle_name": "",
        "last_name": "Jones",
        "name_suffix": "",
        "birth_date": "",
        "gender": "",
        "contact_points-TOTAL_FORMS": "0",
        "contact_points-INITIAL_FORMS": "0",
        "cross_references-TOTAL_FORMS": "0",
        "cross_references-INITIAL_FORMS": "0",
    }
    response = steward.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    ann.refresh_from_db()
    assert ann.first_name == "Anne" and ann.lineage["first_name"]["system"] == "STEWARD"
    assert CrossReference.objects.get(system="STEWARD").source_payload["firstName"] == "Anne"
    assert HistoryEntry.objects.filter(individual=ann, action="update", actor="user:lead").exists()


def test_rule_dry_run_reports_without_saving(steward, household):
    rule = MatchRule.objects.get(name="Shared mailbox")
    url = reverse("admin:customers_matchrule_change", args=[rule.pk])
    form = {
        "name": rule.name,
        "description": rule.description,
        "outcome": "auto_merge",
        "priority": "5",
        "enabled": "on",
        "criteria": '[{"attribute": "email", "method": "provider"}]',
        "_dryrun": "1",
    }
    page = steward.post(url, form)
    html = page.content.decode()
    assert page.status_code == 200 and 'id="dry-run-report"' in html
    assert "1 pair would change" in html and "auto_merge: Shared mailbox" in html
    rule.refresh_from_db()
    assert rule.outcome == "suspect"  # nothing saved

    bad = steward.post(url, form | {"criteria": '[{"attribute": "email", "method": "phonetic"}]'})
    assert "criteria[0].method" in bad.content.decode()


def test_dashboard_shows_the_figures_and_replays_a_dead_letter(steward, household):
    from integrations.models import DeadLetter, SyncRun

    run = SyncRun.objects.first()
    dead = DeadLetter.objects.create(run=run, event=run.event, stage="writeback", reason="400 from Marketing Cloud")
    page = steward.get(reverse("admin-dashboard"))
    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="hourly-chart"' in html and "open match candidates" in html and "400 from Marketing Cloud" in html
    assert "write-back backlog" in html and "Reconciliation poller" in html
    steward.post(reverse("admin-dashboard-replay", args=[dead.pk]))
    dead.refresh_from_db()
    assert dead.replayed_at is not None and dead.replayed_by == "user:lead"
    assert "Operations dashboard" in steward.get(reverse("admin:index")).content.decode()


def _member(client, username, group):
    from django.contrib.auth.models import Group

    user = get_user_model().objects.create_user(username, password="pw-for-tests", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    client.force_login(user)
    return client


def test_viewer_sees_everything_and_changes_nothing(client, household):
    ann, tom = household
    viewer = _member(client, "vera", "Viewer")
    candidate = MatchCandidate.objects.get()
    for url in [
        reverse("admin:customers_individual_changelist"),
        reverse("admin:customers_individual_change", args=[ann.pk]),
        reverse("admin:customers_matchcandidate_change", args=[candidate.pk]),
        reverse("admin:customers_matchrule_changelist"),
        reverse("admin:integrations_syncrun_changelist"),
        reverse("admin-dashboard"),
    ]:
        assert viewer.get(url, follow=True).status_code == 200, url
    review = viewer.get(reverse("admin:customers_matchcandidate_change", args=[candidate.pk])).content.decode()
    assert "Merge (m)" not in review
    refused = [
        viewer.post(reverse("admin:customers_matchcandidate_change", args=[candidate.pk]), {"decision": "merge"}),
        viewer.post(reverse("admin:customers_individual_merge"), {"ids": f"{ann.pk},{tom.pk}"}),
        viewer.post(
            reverse("admin:customers_individual_pin", args=[ann.pk]), {"attribute": "first_name", "value": "X"}
        ),
        viewer.post(reverse("admin:customers_crossreference_unmerge", args=[CrossReference.objects.first().pk])),
        viewer.post(reverse("admin:customers_individual_change", args=[ann.pk]), {"first_name": "X"}),
    ]
    assert [r.status_code for r in refused] == [403] * 5
    actions = viewer.post(
        reverse("admin:customers_individual_changelist"), {"action": "resync", "_selected_action": [ann.pk]}
    )
    assert actions.status_code == 403 and not HistoryEntry.objects.filter(action="resync").exists()
    ann.refresh_from_db()
    assert ann.first_name == "Ann" and not Individual.objects.filter(merged_into__isnull=False).exists()


def test_a_data_steward_can_merge_from_the_queue_and_resync(client, household):
    ann, tom = household
    steward = _member(client, "stella", "Data steward")
    candidate = MatchCandidate.objects.get()
    steward.post(reverse("admin:customers_matchcandidate_change", args=[candidate.pk]), {"decision": "merge"})
    tom.refresh_from_db()
    assert tom.merged_into_id == ann.pk
    steward.post(reverse("admin:customers_individual_changelist"), {"action": "resync", "_selected_action": [ann.pk]})
    assert HistoryEntry.objects.filter(action="resync", actor="user:stella").exists()
    # Erasure stays with admins.
    steward.post(reverse("admin:customers_individual_changelist"), {"action": "erase", "_selected_action": [ann.pk]})
    ann.refresh_from_db()
    assert ann.erased_at is None


def test_page_query_counts_stay_flat_as_records_grow(steward, household, capsys):
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from customers.cim import parse_individual
    from customers.resolution.engine import SourceChange, resolve
    from integrations.models import SyncRun

    ann, _ = household
    candidate = MatchCandidate.objects.get()
    pages = {
        "golden records": reverse("admin:customers_individual_changelist"),
        "search": reverse("admin:customers_individual_changelist") + "?q=jones",
        "record": reverse("admin:customers_individual_change", args=[ann.pk]),
        "review queue": reverse("admin:customers_matchcandidate_changelist") + "?status__exact=open",
        "review pair": reverse("admin:customers_matchcandidate_change", args=[candidate.pk]),
        "cross references": reverse("admin:customers_crossreference_changelist"),
        "sync runs": reverse("admin:integrations_syncrun_changelist"),
        "dashboard": reverse("admin-dashboard"),
        "index": reverse("admin:index"),
        "a cross reference": reverse("admin:customers_crossreference_change", args=[ann.cross_references.first().pk]),
        "a sync run": reverse("admin:integrations_syncrun_change", args=[SyncRun.objects.first().pk]),
    }

    def counts():
        result = {}
        for name, url in pages.items():
            with CaptureQueriesContext(connection) as queries:
                assert steward.get(url).status_code == 200, name
            result[name] = len(queries)
        return result

    small = counts()
    records = [
        SourceChange("POS", f"bulk-{i}", parse_individual(cim(f"First{i}", "Jones", email=f"bulk{i}@example.com")))
        for i in range(300)
    ]
    with transaction.atomic():
        resolve(records)
    large = counts()
    with capsys.disabled():
        print("\nqueries per page (3 records -> 303 records):", {k: (small[k], large[k]) for k in pages})
    for name in pages:
        assert large[name] <= small[name] + 1 and large[name] <= 40, (name, small[name], large[name])


def test_marking_a_cross_reference_invalid_recomputes_the_record(steward, sandbox):
    golden = ingest("POS", "p-1", cim("Robert", "Smith", email="rs@example.com"), "2026-01-01T00:00:00Z")
    ingest("ERP", "e-1", cim("Bob", "Smith", email="rs@example.com"), "2026-02-01T00:00:00Z")
    golden.refresh_from_db()
    assert golden.first_name == "Bob"
    xref = CrossReference.objects.get(system="ERP")
    response = steward.post(reverse("admin:customers_crossreference_change", args=[xref.pk]), {"status": "INVALID"})
    assert response.status_code == 302
    golden.refresh_from_db()
    assert golden.first_name == "Robert" and golden.lineage["first_name"]["system"] == "POS"
    entry = HistoryEntry.objects.filter(individual=golden, object_type="CrossReference", actor="user:lead").get()
    assert entry.after["status"] == "INVALID"
