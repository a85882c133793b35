"""The steward's day in the admin: readable match decisions, the pair page, step logs, dashboard and index."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.urls import reverse

from customers.models import CrossReference, MatchCandidate
from integrations.models import DeadLetter, InboundEvent, SyncRun, SyncStep
from tests.test_mdm import cim, ingest
from tests.test_steward_admin import household, steward  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db


def test_a_cross_references_match_is_a_per_attribute_table_not_json(steward, sandbox):  # noqa: F811
    ingest("POS", "p-1", cim("Robert", "Smith", email="rs@example.com", phone="+1 415 555 0100"))
    ingest("ECOM", "e-1", cim("Robert", "Smith", email="rs@example.com", phone="+1 415 555 0100"))
    xref = CrossReference.objects.get(system="ECOM", external_id="e-1")
    assert xref.match_detail and xref.match_detail.get("attributes"), xref.match_detail
    html = steward.get(reverse("admin:customers_crossreference_change", args=[xref.pk])).content.decode()
    assert 'id="decision"' in html and 'class="comparison"' in html
    assert "this source record" in html and "the golden record it joined" in html
    assert '<td class="verdict verdict-exact">exact</td>' in html
    assert "agreement from 0 to 1" in html
    assert "&quot;attributes&quot;" not in html and '"attributes":' not in html  # no raw JSON blob


def test_the_pair_page_heads_columns_with_names_explains_the_score_and_links_back(steward, household):  # noqa: F811
    ann, tom = household
    candidate = MatchCandidate.objects.get()
    ingest("POS", "p-3", cim("Sue", "Jones", email="home@example.com"))
    later = MatchCandidate.objects.filter(status="open").exclude(pk=candidate.pk).order_by("created_at", "id").first()
    assert later is not None
    html = steward.get(reverse("admin:customers_matchcandidate_change", args=[candidate.pk])).content.decode()
    head = re.search(r'<table class="comparison" id="comparison">\s*<thead>(.*?)</thead>', html, re.S).group(1)
    assert ann.person_name in head and tom.person_name in head
    assert reverse("admin:customers_individual_change", args=[tom.pk]) in head
    assert "agreement from 0 to 1" in html and "<th>similarity</th>" in html
    assert 'id="back-to-queue"' in html and "?status__exact=open" in html
    assert f'href="{reverse("admin:customers_matchcandidate_change", args=[later.pk])}"' in html  # next open pair
    assert 'class="button default" data-key="m"' in html
    queue = steward.get(reverse("admin:customers_matchcandidate_changelist") + "?status__exact=open").content.decode()
    assert "agreement (0-1)" in queue.lower() and " of 1</span>" in queue


def test_a_sync_run_shows_milliseconds_durations_and_step_data_as_a_table(steward, household):  # noqa: F811
    run = SyncRun.objects.filter(steps__isnull=False).first()
    start = dt.datetime(2026, 3, 1, 9, 30, 15, 123000, tzinfo=dt.UTC)
    run.steps.all().delete()
    SyncStep.objects.create(
        run=run,
        seq=1,
        name="resolve",
        outcome="ok",
        started_at=start,
        finished_at=start + dt.timedelta(milliseconds=42),
        data={"rule": "email and name", "candidates": [1, 2]},
    )
    html = steward.get(reverse("admin:integrations_syncrun_change", args=[run.pk])).content.decode()
    assert re.search(r"\d\d:\d\d:15\.123", html), "start time to the millisecond"
    assert "42 ms" in html
    assert '<table class="step-data"><tr><th>rule</th><td>email and name</td></tr>' in html
    assert "<td>[1, 2]</td>" in html
    assert 'id="steps-log"' in html and '<td class="original">' not in html  # no caption row per step


def test_a_long_raw_body_is_folded_and_wraps(steward, household):  # noqa: F811
    event = InboundEvent.objects.first()
    event.raw_body = b"eyJhbGciOiJIUzI1NiJ9." + b"x" * 5000
    event.save(update_fields=["raw_body"])
    html = steward.get(reverse("admin:integrations_inboundevent_change", args=[event.pk])).content.decode()
    assert '<details class="raw-fold"><summary>5,021 characters: show</summary><pre class="raw-value">' in html
    assert "integrations/operations.css" in html
    assert re.search(r"\d\d:\d\d:\d\d\.\d{3}", html), "received at, to the millisecond"
    assert '<td class="original">' not in html  # its sync runs without a caption row each


def test_dashboard_has_no_stray_failed_line_and_ticks_reach_the_last_bars(steward, household):  # noqa: F811
    html = steward.get(reverse("admin-dashboard")).content.decode()
    tile = re.search(r'<div id="writeback-tile">(.*?)</div>', html, re.S)
    assert tile and "failed" not in tile.group(1) and "; " not in tile.group(1)
    svg = re.search(r'<svg id="hourly-chart".*?</svg>', html, re.S).group(0)
    bar_x = max(int(x) for x in re.findall(r'<rect x="(\d+)"', svg))
    label_x = max(int(x) for x in re.findall(r'<text x="(\d+)"', svg))
    assert bar_x - label_x < 30, (bar_x, label_x)  # the last hour's bars carry a label
    xref = CrossReference.objects.first()
    CrossReference.objects.filter(pk=xref.pk).update(writeback_state="failed")
    html = steward.get(reverse("admin-dashboard")).content.decode()
    tile = re.search(r'<div id="writeback-tile">(.*?)</div>', html, re.S).group(1)
    assert "1 failed</a>" in tile


def test_the_index_counts_what_waits(steward, household):  # noqa: F811
    run = SyncRun.objects.first()
    DeadLetter.objects.create(run=run, event=run.event, stage="writeback", reason="400")
    html = steward.get(reverse("admin:index")).content.decode()
    assert '<strong id="workspace-candidates">1 open candidate</strong>' in html
    assert '<strong id="workspace-dead-letters">1 dead letter not replayed</strong>' in html


def test_the_index_count_is_capped(household, monkeypatch):  # noqa: F811
    from integrations.templatetags import workspace

    monkeypatch.setattr(workspace, "COUNT_CAP", 0)
    assert workspace.workspace_counts()["candidates"] == "0+ open candidates"
