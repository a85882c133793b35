"""The custom activity as Journey Builder loads it: config.json, its page, lifecycle calls."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest

from integrations.marketing_cloud.mapping import IN_ARGUMENTS
from sandboxes.marketing_cloud.journey import BindingError, Journey
from tests.conftest import JWT_SECRET

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "journey_builder.json").read_text())
EVENT_KEY = FIXTURE["requested_trigger_event_definition"]["eventDefinitionKey"]


@pytest.fixture
def mc_settings(settings):
    settings.MC_JWT_SECRET = JWT_SECRET
    return settings


def test_config_json_declares_in_arguments_jwt_and_lifecycle_urls(client, mc_settings):
    config = client.get("/api/v1/marketing-cloud/journey/config.json").json()
    execute = config["arguments"]["execute"]
    assert config["type"] == "REST" and execute["useJwt"] is True
    assert execute["url"].endswith("/api/v1/marketing-cloud/journey/execute")
    assert 1000 <= execute["timeout"] <= 100000 and execute["retryCount"] >= 1
    declared = [next(iter(item)) for item in config["schema"]["arguments"]["execute"]["inArguments"]]
    assert declared == list(IN_ARGUMENTS)
    for action in ("save", "publish", "validate", "stop"):
        assert config["configurationArguments"][action]["url"].endswith(f"/journey/{action}")
        assert config["configurationArguments"][action]["useJwt"] is True
    # The top-level shape of a real activity's config.json (Salesforce's examples).
    assert set(FIXTURE["config_json"]) <= set(config)
    assert set(FIXTURE["config_json"]["arguments"]["execute"]) <= set(execute)


def test_config_json_binds_only_what_every_journey_compiles(client, mc_settings):
    config = client.get("/api/v1/marketing-cloud/journey/config.json").json()
    in_arguments = config["arguments"]["execute"]["inArguments"]
    assert in_arguments == [{"SubscriberKey": "{{Contact.Key}}"}, {"EmailAddress": "{{InteractionDefaults.Email}}"}]
    # The page binds the rest to the entry source: Journey Builder opens it on drop.
    assert config["metaData"]["configOnDrop"] is True and config["metaData"]["isConfigured"] is False
    # A journey whose contacts have no attribute set at all publishes with these defaults.
    Journey(EVENT_KEY, in_arguments).publish()


def test_config_json_uses_the_attribute_set_when_one_is_named(client, mc_settings):
    mc_settings.MC_ATTRIBUTE_SET = "Individual"
    in_arguments = client.get("/api/v1/marketing-cloud/journey/config.json").json()["arguments"]["execute"][
        "inArguments"
    ]
    assert [next(iter(item)) for item in in_arguments] == list(IN_ARGUMENTS)
    assert in_arguments[2] == {"SubscriberId": '{{Contact.Attribute."Individual".SubscriberId}}'}
    with pytest.raises(BindingError, match="no attribute set 'Individual'"):
        Journey(EVENT_KEY, in_arguments).publish()  # where Data Designer links no "Individual"
    Journey(EVENT_KEY, in_arguments, attribute_sets={"Individual": {}}).publish()


def test_configuration_page_and_icon(client, mc_settings):
    page = client.get("/api/v1/marketing-cloud/journey/index.html")
    assert page.status_code == 200 and b"Postmonger" in page.content and b"{{Contact.Key}}" in page.content
    assert f'data-in-arguments="{" ".join(IN_ARGUMENTS)}"'.encode() in page.content
    assert "frame-ancestors" in page.headers["Content-Security-Policy"]
    assert client.get("/api/v1/marketing-cloud/journey/icon.svg").headers["Content-Type"] == "image/svg+xml"


@pytest.mark.parametrize("action", ["save", "publish", "validate", "stop"])
def test_lifecycle_calls_are_jwt_verified(client, mc_settings, action):
    url = f"/api/v1/marketing-cloud/journey/{action}"
    now = int(time.time())
    claims = {"activityObjectID": "a1", "journeyId": "j1", "iat": now, "exp": now + 300}
    token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    ok = client.post(url, data=token, content_type="application/jwt")
    assert ok.status_code == 200 and ok.json() == {"success": True}
    bad = client.post(
        url, data=jwt.encode({"x": 1}, "wrong-secret-wrong-secret-wrong-secret!"), content_type="application/jwt"
    )
    assert bad.status_code == 401
