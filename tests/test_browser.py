"""The steward workspace in a real browser: Playwright driving Debian's Chromium against a live hub.

Each main page is saved as a screenshot under the git-ignored var/screenshots/, or under the directory
HUB_SCREENSHOTS_DIR names: `make screenshots` sets it to docs/screenshots/ (shown in the README), so
only that target changes the tracked files and `make test` leaves the clone clean.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import transaction

from customers.models import CrossReference, HistoryEntry, Individual, MatchCandidate, MatcherModel
from customers.stewardship import mark_not_a_match
from integrations.models import DeadLetter, SyncRun
from tests.test_match_weights import _load, make_model
from tests.test_mdm import cim, ingest

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]
REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / os.environ.get("HUB_SCREENSHOTS_DIR", "var/screenshots")
PASSWORD = "pw-for-browser-tests"


def user(username: str, group: str):
    account = get_user_model().objects.create_user(username, password=PASSWORD, is_staff=True)
    account.groups.add(Group.objects.get(name=group))
    return account


def login(browser, live_server, username: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r".*/admin/$"))
    return page


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def data(sandbox):
    ann = ingest("POS", "p-1", cim("Ann", "Jones", email="home@example.com", birth="1980-05-01", postal="94105"))
    tom = ingest("B2C_COMMERCE", "c-2", cim("Tom", "Jones", email="home@example.com", phone="+1 415 555 0100"))
    ingest("POS", "p-3", cim("Grace", "Hopper", email="grace@example.com", phone="+1 212 555 0199"))
    run = SyncRun.objects.filter(external_id="p-3").first()
    dead = DeadLetter.objects.create(run=run, event=run.event, stage="writeback", reason="400: invalid field (test)")
    return {"ann": ann, "tom": tom, "dead": dead}


def test_a_steward_searches_reviews_merges_unmerges_replays_and_resyncs(browser, live_server, data):
    user("stella", "Data steward")
    page = login(browser, live_server, "stella")
    expect = playwright_api.expect

    page.click("text=Operations dashboard")
    expect(page.locator("#hourly-chart")).to_be_visible()
    shot(page, "dashboard")

    # Search by email as typed, open the record.
    page.goto(f"{live_server.url}/admin/customers/individual/")
    page.fill("#searchbar", "HOME@example.com")
    page.press("#searchbar", "Enter")
    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    shot(page, "golden-records")
    page.click(f'a[title="{data["ann"].master_id}"]')
    expect(page.locator("table.lineage")).to_be_visible()
    expect(page.locator("#timeline")).to_contain_text("Create")
    shot(page, "golden-record")

    # The review queue: the pair, side by side; merge with the keyboard.
    page.goto(f"{live_server.url}/admin/")
    page.click("#steward-links >> text=Review queue")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    page.locator("#result_list tbody tr th a, #result_list tbody tr td a").first.click()
    expect(page.locator("#comparison tr.differs").first).to_be_visible()
    expect(page.locator("#comparison")).to_contain_text("after a merge (preview)")
    shot(page, "review-pair")
    page.keyboard.press("m")
    expect(page.locator(".messagelist")).to_contain_text("Merged into")
    tom = Individual.objects.get(pk=data["tom"].pk)
    assert tom.merged_into_id == data["ann"].pk

    # Unmerge the B2C record again from the record page.
    page.goto(f"{live_server.url}/admin/customers/individual/{data['ann'].pk}/change/")
    xref = CrossReference.objects.get(external_id="c-2")
    page.click(f"a[href$='/crossreference/{xref.pk}/unmerge/']")
    page.click("#confirm-unmerge")
    expect(page.locator(".messagelist")).to_contain_text("now has its own golden record")
    xref.refresh_from_db()
    assert xref.individual_id != data["ann"].pk

    # Replay the dead letter from the dashboard.
    page.goto(f"{live_server.url}/admin/dashboard/")
    page.click("#dead-letters button.replay")
    expect(page.locator(".messagelist")).to_contain_text("replayed")
    data["dead"].refresh_from_db()
    assert data["dead"].replayed_by == "user:stella"

    # Re-sync one record and see the new sync run at once.
    page.goto(f"{live_server.url}/admin/customers/individual/?q=grace")
    page.check("#result_list tbody input.action-select")
    page.select_option("select[name=action]", "resync")
    page.click("button[name=index]")
    expect(page.locator(".messagelist")).to_contain_text("Re-sync queued for 1 record")
    page.click("text=see the new sync runs")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    shot(page, "sync-runs")
    page.locator("#result_list tbody tr th a").first.click()
    shot(page, "sync-run")
    assert HistoryEntry.objects.filter(action="resync", actor_user__username="stella").exists()
    page.close()


def test_a_viewer_is_refused_every_change(browser, live_server, data):
    user("vera", "Viewer")
    page = login(browser, live_server, "vera")
    expect = playwright_api.expect
    page.goto(f"{live_server.url}/admin/customers/individual/{data['ann'].pk}/change/")
    expect(page.locator("table.lineage")).to_be_visible()
    assert page.locator("input[name=_save]").count() == 0
    page.goto(f"{live_server.url}/admin/customers/individual/")
    options = (
        page.locator("select[name=action] option").all_inner_texts()
        if page.locator("select[name=action]").count()
        else []
    )
    assert not any("Re-sync" in o or "Merge" in o or "Erase" in o for o in options)
    candidate = MatchCandidate.objects.get()
    page.goto(f"{live_server.url}/admin/customers/matchcandidate/{candidate.pk}/change/")
    assert page.locator("#decide").count() == 0
    # Posting by hand (the browser's session and CSRF token) is refused too.
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    headers = {"X-CSRFToken": csrf, "Referer": live_server.url + "/admin/"}
    posts = {
        "merge from queue": (f"/admin/customers/matchcandidate/{candidate.pk}/change/", {"decision": "merge"}),
        "merge two": ("/admin/customers/individual/merge/", {"ids": f"{data['ann'].pk},{data['tom'].pk}"}),
        "pin": (f"/admin/customers/individual/{data['ann'].pk}/pin/", {"attribute": "first_name", "value": "X"}),
        "unmerge": (f"/admin/customers/crossreference/{CrossReference.objects.first().pk}/unmerge/", {}),
        "replay": (f"/admin/dashboard/replay/{data['dead'].pk}/", {}),
    }
    for name, (path, form) in posts.items():
        response = page.request.post(live_server.url + path, form=form | {"csrfmiddlewaretoken": csrf}, headers=headers)
        assert response.status == 403, name
    assert not Individual.objects.filter(merged_into__isnull=False).exists()
    data["dead"].refresh_from_db()
    assert data["dead"].replayed_at is None
    page.close()


def test_lists_fit_a_1366_px_screen(browser, live_server, data):
    """Master IDs stay on one line and no column is cut off, on a laptop's 1366 px."""
    user("stella", "Data steward")
    page = login(browser, live_server, "stella")
    page.set_viewport_size({"width": 1366, "height": 800})
    for path, name in (("customers/individual/", "golden-records-1366"), ("integrations/syncrun/", "sync-runs-1366")):
        page.goto(f"{live_server.url}/admin/{path}")
        cells = page.locator("#result_list .master-id")
        assert cells.count() >= 3, path
        line = page.evaluate("parseFloat(getComputedStyle(document.querySelector('#result_list td')).lineHeight)")
        heights = [box["height"] for box in (cells.nth(i).bounding_box() for i in range(cells.count()))]
        assert max(heights) <= 2 * line, (path, heights, line)
        shot(page, name)
        fits = page.evaluate(
            "(() => { const t = document.querySelector('#result_list');"
            " return t.getBoundingClientRect().right <= document.documentElement.clientWidth"
            " && t.parentElement.scrollWidth <= t.parentElement.clientWidth + 1; })()"
        )
        assert fits, path


def test_a_steward_activates_a_trained_matcher_model_and_reads_a_weighed_review_pair(browser, live_server, sandbox):
    """Train a draft, read it, dry-run and activate it, see a pair it sent to review, then go back."""
    with transaction.atomic():
        _load(300, 60)  # golden records (some with a second source) written by the engine's store
    previous = make_model(version=1, status="active", auto=500.0, review=400.0)
    ann, bob = Individual.objects.order_by("pk")[:2]
    mark_not_a_match(ann, bob, actor="steward")  # a steward's decision: a labelled pair for training
    call_command("train_matcher", random_records=300, blocked_records=300, stdout=io.StringIO())
    draft = MatcherModel.objects.get(status="draft")
    user("stella", "Data steward")
    page = login(browser, live_server, "stella")
    page.set_viewport_size({"width": 1366, "height": 800})
    expect = playwright_api.expect

    page.goto(f"{live_server.url}/admin/")
    page.click("text=Matcher models")
    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    page.click(f"#result_list a:text-is('v{draft.version}')")
    expect(page.locator("#levels")).to_contain_text("sounds alike")
    expect(page.locator("#thresholds")).to_be_visible()
    # Trained on a few hundred records and weak labels, no threshold is told apart: the auto
    # threshold stays at the model's own floor, and the page warns.
    assert draft.training_report["labels_undecided"] is True
    assert draft.auto_threshold == draft.training_report["auto_threshold_floor"] == 8.0
    expect(page.locator("#threshold-warning")).to_contain_text("did not choose the thresholds")
    expect(page.locator("#training-report")).to_contain_text("random pairs")
    expect(page.locator("#training-report")).not_to_contain_text("{")  # no raw JSON
    assert_fits(page, "#levels", "#thresholds")
    assert_no_long_decimals(page, "#matcher-model")
    shot(page, "matcher-model")

    page.click("#activate")
    expect(page.locator("#dry-run-report")).to_contain_text("Dry run")
    expect(page.locator("#transitions")).to_contain_text("no match")  # outcomes in words, not no_match
    expect(page.locator("#activate-confirm")).to_have_value(re.compile(f"v{previous.version} is retired"))
    assert_fits(page, "#dry-run-report table")
    assert_no_long_decimals(page, "#dry-run-report")
    shot(page, "matcher-activate")
    page.click("#activate-confirm")
    expect(page.locator(".messagelist")).to_contain_text(f"Matcher model v{draft.version} is active")
    expect(page.locator("#matcher-model h2")).to_contain_text("Active")
    assert dict(MatcherModel.objects.values_list("version", "status")) == {
        previous.version: "retired",
        draft.version: "active",
    }

    # Twins: the weight alone would merge them, a guard rule sends them to a steward.
    shared = {"last": "Okafor", "birth": "1990-04-01", "postal": "94105", "email": "okafor.home@example.com"}
    ingest("POS", "t-1", cim("Chidi", **shared))
    ingest("POS", "t-2", cim("Chioma", **shared))
    pair = MatchCandidate.objects.get(status="open")
    assert pair.model_version == draft.version and pair.comparison.get("guard")
    page.goto(f"{live_server.url}/admin/customers/matchcandidate/{pair.pk}/change/")
    weight = page.locator("#match-weight")
    expect(weight).to_contain_text(f"matcher model v{draft.version}")
    expect(weight).to_contain_text(pair.comparison["guard"])
    expect(weight).to_contain_text("would have merged them")  # the guard, in plain words
    expect(page.locator("#weight-parts tbody tr")).to_have_count(len(pair.comparison["parts"]))
    expect(page.locator("#weight-parts")).to_contain_text("birth date")
    expect(page.locator("#weight-parts")).to_contain_text("same")
    # The parts and the prior add up to the weight shown.
    expect(page.locator("#weight-parts tfoot")).to_contain_text("prior")
    expect(page.locator("#weight-parts tfoot")).to_contain_text(f"{pair.comparison['weight']:.2f}")
    assert_fits(page, "#weight-parts", "#comparison")
    assert_no_long_decimals(page, "#match-weight")
    shot(page, "review-pair-weights")

    # Back to the previous model: the same dry run, then it is active again.
    page.goto(f"{live_server.url}/admin/customers/matchermodel/{previous.pk}/change/")
    expect(page.locator("#activate")).to_contain_text("Reactivate")
    page.click("#activate")
    page.click("#activate-confirm")
    expect(page.locator(".messagelist")).to_contain_text(f"v{draft.version} retired")
    assert dict(MatcherModel.objects.values_list("version", "status")) == {
        previous.version: "active",
        draft.version: "retired",
    }
    page.close()


def test_a_viewer_reads_a_matcher_model_but_cannot_activate_it(browser, live_server):
    row = make_model(version=1, status="draft")
    user("vera", "Viewer")
    page = login(browser, live_server, "vera")
    page.goto(f"{live_server.url}/admin/customers/matchermodel/{row.pk}/change/")
    playwright_api.expect(page.locator("#levels")).to_be_visible()
    assert page.locator("#activate").count() == 0 and page.locator("#deactivate").count() == 0
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    headers = {"X-CSRFToken": csrf, "Referer": live_server.url + "/admin/"}
    for action in ("activate", "deactivate"):
        response = page.request.post(
            f"{live_server.url}/admin/customers/matchermodel/{row.pk}/{action}/",
            form={"confirm": "yes", "csrfmiddlewaretoken": csrf},
            headers=headers,
        )
        assert response.status == 403, action
    row.refresh_from_db()
    assert row.status == "draft"
    page.close()


def assert_fits(page, *selectors: str) -> None:
    """Each element ends inside the window at 1366 px: nothing cut off or scrolled sideways."""
    for selector in selectors:
        right = page.evaluate(
            "(s) => Math.max(...[...document.querySelectorAll(s)].map(e => e.getBoundingClientRect().right))",
            selector,
        )
        assert right <= page.evaluate("document.documentElement.clientWidth"), selector
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth + 1")


def assert_no_long_decimals(page, selector: str) -> None:
    """Weights and probabilities are shown rounded, not as a float's 10+ digits."""
    text = page.locator(selector).inner_text()
    assert not re.search(r"\d\.\d{6,}", text), re.findall(r"\S*\d\.\d{6,}\S*", text)[:5]
