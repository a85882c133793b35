"""The activity's configuration page in a real browser, with Journey Builder's side of Postmonger played.

Journey Builder shows the page in an iframe on its own origin and talks to it through Postmonger:
each message is the string ``JSON.stringify({e: event, a1: argument})`` sent with postMessage
(tests/fixtures/journey_builder.json). Here a harness page on ``https://jb.s50.exacttarget.com``
(an origin the page's ``frame-ancestors`` admits) frames the page from ``https://hub.example.test``;
Playwright routes both to the test (the hub's requests go to the live server, CSP and all), and
serves Postmonger as published: the bytes of postmonger@0.0.16, checked against the page's SRI hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from integrations.marketing_cloud.activity import POSTMONGER_INTEGRITY, POSTMONGER_URL
from integrations.marketing_cloud.mapping import IN_ARGUMENTS
from integrations.models import InboundEvent
from sandboxes.marketing_cloud.journey import BindingError, Journey, entry_source_bindings
from tests.conftest import JWT_SECRET

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "journey_builder.json").read_text())
JB_ORIGIN = "https://jb.s50.exacttarget.com"
HUB_ORIGIN = "https://hub.example.test"
ACTIVITY_PAGE = f"{HUB_ORIGIN}/api/v1/marketing-cloud/journey/index.html"
POSTMONGER_CACHE = Path(__file__).resolve().parent.parent / "var" / "postmonger-0.0.16.min.js"
EVENT_KEY = FIXTURE["requested_trigger_event_definition"]["eventDefinitionKey"]
# Journey Builder's side: it frames the activity and exchanges Postmonger's strings with it.
HARNESS = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Journey Builder (test harness)</title></head>
<body>
<iframe id="activity" src="{ACTIVITY_PAGE}" width="640" height="360"></iframe>
<script>
  window.fromActivity = [];
  window.addEventListener("message", function (event) {{
    if (event.source !== document.getElementById("activity").contentWindow) {{ return; }}
    window.fromActivity.push({{ origin: event.origin, data: event.data }});
  }});
  window.toActivity = function (name, argument) {{
    var message = {{ e: name }};
    if (argument !== undefined) {{ message.a1 = argument; }}
    document.getElementById("activity").contentWindow.postMessage(JSON.stringify(message), "*");
  }};
</script>
</body></html>"""


def _sri(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def _from_npm() -> bytes | None:
    if shutil.which("npm") is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            ["npm", "pack", "postmonger@0.0.16", "--silent"], cwd=folder, capture_output=True, timeout=120, check=False
        )
        packed = list(Path(folder).glob("postmonger-0.0.16.tgz"))
        if done.returncode or not packed:
            return None
        with tarfile.open(packed[0]) as archive:
            member = archive.extractfile("package/postmonger.min.js")
            return member.read() if member else None


@pytest.fixture(scope="session")
def postmonger_js() -> bytes:
    """Postmonger 0.0.16 as jsDelivr serves it (npm's file), from var/, jsDelivr or npm; SRI-checked."""
    if POSTMONGER_CACHE.exists() and _sri(POSTMONGER_CACHE.read_bytes()) == POSTMONGER_INTEGRITY:
        return POSTMONGER_CACHE.read_bytes()
    data: bytes | None = None
    try:
        response = requests.get(POSTMONGER_URL, timeout=15)
        data = response.content if response.status_code == 200 else None
    except requests.RequestException:
        data = None
    if data is None or _sri(data) != POSTMONGER_INTEGRITY:
        data = _from_npm()
    if data is None or _sri(data) != POSTMONGER_INTEGRITY:
        pytest.fail(
            f"Postmonger 0.0.16 is needed (its SHA-384 must be {POSTMONGER_INTEGRITY}): no copy in {POSTMONGER_CACHE}, "
            "and neither jsDelivr nor `npm pack postmonger@0.0.16` gave one"
        )
    POSTMONGER_CACHE.parent.mkdir(parents=True, exist_ok=True)
    POSTMONGER_CACHE.write_bytes(data)
    return data


class JourneyBuilderSide:
    """The harness page, driven from the test: what the activity posted, and posting to it."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console: list[str] = []
        page.on("console", lambda message: self.console.append(message.text))

    def raw(self) -> list[dict[str, str]]:
        return self.page.evaluate("window.fromActivity")

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(message["data"]) for message in self.raw()]

    def wait_for(self, name: str) -> dict[str, Any]:
        self.page.wait_for_function(
            "name => window.fromActivity.some(m => JSON.parse(m.data).e === name)", arg=name, timeout=10_000
        )
        return next(event for event in self.events() if event["e"] == name)

    def send(self, name: str, argument: Any = None) -> None:
        if argument is None:
            self.page.evaluate("name => window.toActivity(name)", name)
        else:
            self.page.evaluate("([name, argument]) => window.toActivity(name, argument)", [name, argument])


@pytest.fixture
def journey_builder(browser, live_server, postmonger_js, settings):
    settings.MC_JWT_SECRET = JWT_SECRET
    page = browser.new_page()

    def to_live_server(route: Any) -> None:
        parts = urlsplit(route.request.url)
        target = f"{live_server.url}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        route.fulfill(response=route.fetch(url=target))

    page.route(f"{JB_ORIGIN}/**", lambda route: route.fulfill(status=200, content_type="text/html", body=HARNESS))
    page.route(f"{HUB_ORIGIN}/**", to_live_server)
    page.route(
        POSTMONGER_URL,
        lambda route: route.fulfill(
            status=200,
            body=postmonger_js,
            headers={"Content-Type": "application/javascript", "Access-Control-Allow-Origin": "*"},
        ),
    )
    side = JourneyBuilderSide(page)
    page.goto(f"{JB_ORIGIN}/journey-builder/canvas")
    yield side
    page.close()


def _configure(side: JourneyBuilderSide, *, event_definition: Any, schema: Any) -> list[dict[str, Any]]:
    """Play Journey Builder up to "Done": the in-arguments the activity saved with updateActivity."""
    side.wait_for("ready")
    side.send("initActivity", FIXTURE["init_activity"])
    side.wait_for("requestTriggerEventDefinition")
    if event_definition is not None:
        side.send("requestedTriggerEventDefinition", event_definition)
    side.wait_for("requestSchema")
    if schema is not None:
        side.send("requestedSchema", schema)
    side.send("clickedNext")
    update = side.wait_for("updateActivity")
    [raw] = [m for m in side.raw() if json.loads(m["data"])["e"] == "updateActivity"]
    # Postmonger's wire format: the event name in "e", the activity in "a1", from the hub's origin.
    assert raw["origin"] == HUB_ORIGIN and set(json.loads(raw["data"])) == {"e", "a1"}
    activity = update["a1"]
    assert activity["metaData"]["isConfigured"] is True
    assert activity["key"] == FIXTURE["init_activity"]["key"]  # the rest of the activity is handed back
    assert not [line for line in side.console if "Content Security Policy" in line or "integrity" in line]
    return activity["arguments"]["execute"]["inArguments"]


def test_done_binds_the_entry_sources_fields_as_spelled_there_and_the_journey_publishes(journey_builder, live_server):
    in_arguments = _configure(
        journey_builder,
        event_definition=FIXTURE["requested_trigger_event_definition"],
        schema=FIXTURE["requested_schema"],
    )
    assert in_arguments == [
        {"SubscriberKey": "{{Contact.Key}}"},
        {"EmailAddress": "{{InteractionDefaults.Email}}"},
        {"LastName": f'{{{{Event."{EVENT_KEY}".lastname}}}}'},  # the entry source's own spelling
        {"ModifiedDate": f'{{{{Event."{EVENT_KEY}".ModifiedDate}}}}'},
    ]  # FirstName ("First Name" there) and the columns the entry source lacks are not bound
    assert "Contact.Attribute" not in json.dumps(in_arguments)

    # Journey Builder compiles these in a journey with no attribute set at all, and resolves them.
    journey = Journey(EVENT_KEY, in_arguments, defaults=FIXTURE["requested_interaction_defaults"])
    journey.publish()
    row = {"SubscriberKey": "SK-BROWSER-1", "emailaddress": "grace.hopper@example.com", "lastname": "Hopper"}
    row["ModifiedDate"] = "2026-11-20T10:00:00Z"
    response = journey.send(
        f"{live_server.url}/api/v1/marketing-cloud/journey/execute", JWT_SECRET, "SK-BROWSER-1", row
    )
    assert response.status_code == 200, response.text
    cim = InboundEvent.objects.get(pk=response.json()["eventId"]).individual_cim
    assert cim["lastName"] == "Hopper" and cim["contactPoints"][0]["emailAddress"] == "grace.hopper@example.com"


def test_without_the_schema_every_column_is_bound_to_the_entry_event(journey_builder):
    in_arguments = _configure(
        journey_builder, event_definition=FIXTURE["requested_trigger_event_definition"], schema=None
    )
    # The same bindings the emulator's journey player uses for an entry source.
    assert in_arguments == entry_source_bindings(EVENT_KEY, IN_ARGUMENTS)
    Journey(EVENT_KEY, in_arguments).publish()


def test_without_an_entry_event_the_named_attribute_set_is_used(journey_builder, settings):
    settings.MC_ATTRIBUTE_SET = "Customer Individuals"
    journey_builder.page.reload()
    in_arguments = _configure(journey_builder, event_definition=None, schema=None)
    assert in_arguments[:2] == [{"SubscriberKey": "{{Contact.Key}}"}, {"EmailAddress": "{{InteractionDefaults.Email}}"}]
    assert in_arguments[2:] == [
        {name: f'{{{{Contact.Attribute."Customer Individuals".{name}}}}}'} for name in IN_ARGUMENTS[2:]
    ]
    # Such bindings compile only where Data Designer links a data extension of that name.
    with pytest.raises(BindingError, match="no attribute set 'Customer Individuals'"):
        Journey(EVENT_KEY, in_arguments).publish()
    Journey(EVENT_KEY, in_arguments, attribute_sets={"Customer Individuals": {}}).publish()


def test_the_activity_speaks_postmonger_as_the_fixture_records(journey_builder):
    journey_builder.wait_for("ready")
    first, second = journey_builder.raw()[:2]
    assert first["data"] == FIXTURE["postmonger_wire"]["ready"]
    assert second["data"] == FIXTURE["postmonger_wire"]["requestTriggerEventDefinition"]
