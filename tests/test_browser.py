"""The steward workspace in a real browser: Playwright driving Debian's Chromium against a live hub.

Each main page is saved as a screenshot under the git-ignored var/screenshots/, or under the directory
HUB_SCREENSHOTS_DIR names: `make screenshots` sets it to docs/screenshots/ (shown in the README), so
only that target changes the tracked files and `make test` leaves the clone clean.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from customers.models import CrossReference, HistoryEntry, Individual, MatchCandidate
from integrations.models import DeadLetter, SyncRun
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
