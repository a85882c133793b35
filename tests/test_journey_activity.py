"""The custom activity as Journey Builder loads it: config.json, its page, lifecycle calls."""

from __future__ import annotations

import time

import jwt
import pytest

from integrations.marketing_cloud.mapping import IN_ARGUMENTS
from tests.conftest import JWT_SECRET


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
    names = [next(iter(item)) for item in execute["inArguments"]]
    assert names == list(IN_ARGUMENTS)
    assert execute["inArguments"][0] == {"SubscriberKey": "{{Contact.Key}}"}
    for action in ("save", "publish", "validate", "stop"):
        assert config["configurationArguments"][action]["url"].endswith(f"/journey/{action}")
        assert config["configurationArguments"][action]["useJwt"] is True


def test_configuration_page_and_icon(client, mc_settings):
    page = client.get("/api/v1/marketing-cloud/journey/index.html")
    assert page.status_code == 200 and b"Postmonger" in page.content and b"{{Contact.Key}}" in page.content
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
