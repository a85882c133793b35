"""The OpenAPI schema describes the CIM Individual the parser accepts, and every refusal is a problem with `errors`.

Both directions are checked: individuals generated from the published schema (schemathesis'
generator, the one the API conformance test uses) are accepted by ``parse_individual``, except
for the two range rules the schema states in words; and hand-picked bad individuals the parser
refuses are refused by the schema too. The refusals are real HTTP answers of the running hub.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import jsonschema
import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from customers.choices import ContactPointKind
from customers.cim import CimValidationError, parse_individual
from customers.cim_schema import COMPONENT_NAME, COMPONENT_REF, INDIVIDUAL_EXAMPLE
from tests.conftest import TEST_SOURCES

PROBLEM = "application/problem+json"
# Generated individuals per run: the same ones every run (derandomised); raise it to search wider
# (CIM_EXAMPLES=4000 passed when this was written).
EXAMPLES = int(os.environ.get("CIM_EXAMPLES", "300"))


def published_schema() -> dict[str, Any]:
    """The schema ``GET /api/schema/`` serves, as JSON."""
    return json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True), default=str))


def as_json_schema(node: Any, components: dict[str, Any]) -> Any:
    """An OpenAPI 3.0 schema as plain JSON Schema: references inlined, ``nullable`` as a null alternative."""
    if isinstance(node, list):
        return [as_json_schema(item, components) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return as_json_schema(components[node["$ref"].rsplit("/", 1)[1]], components)
    converted = {key: as_json_schema(value, components) for key, value in node.items() if key != "nullable"}
    converted.pop("example", None)
    if node.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return published_schema()


@pytest.fixture(scope="module")
def individual_validator(schema) -> jsonschema.Draft7Validator:
    components = schema["components"]["schemas"]
    return jsonschema.Draft7Validator(
        as_json_schema(components[COMPONENT_NAME], components), format_checker=jsonschema.FormatChecker()
    )


def test_events_body_refers_to_the_described_individual(schema):
    components = schema["components"]["schemas"]
    individual = schema["components"]["schemas"]["CimEventRequest"]["properties"]["individual"]
    assert COMPONENT_REF in individual.get("allOf", [individual])
    described = components[COMPONENT_NAME]
    kinds = [point["title"] for point in described["properties"]["contactPoints"]["items"]["oneOf"]]
    assert kinds == [kind.value for kind in ContactPointKind]
    for name in ("firstName", "lastName", "birthDate", "contactPoints", "externalIds", "doNotMarketFromUpdateDate"):
        assert described["properties"][name].get("description") or described["properties"][name].get("items")
    assert described["properties"]["birthDate"]["format"] == "date"
    assert described["example"] == INDIVIDUAL_EXAMPLE


def test_the_example_is_valid_for_both(individual_validator):
    individual_validator.validate(INDIVIDUAL_EXAMPLE)
    parsed = parse_individual(copy.deepcopy(INDIVIDUAL_EXAMPLE))
    assert (len(parsed.emails), len(parsed.phones), len(parsed.addresses)) == (1, 1, 1)


# The parser's two rules that OpenAPI 3.0 cannot state (they are in the fields' descriptions).
RANGE_RULES = ("out of range", "UTC offset")


def test_what_the_schema_allows_the_parser_accepts(schema):
    document = {
        "openapi": "3.0.3",
        "info": {"title": "individual", "version": "1"},
        "paths": {
            "/individual": {
                "post": {
                    "requestBody": {"required": True, "content": {"application/json": {"schema": COMPONENT_REF}}},
                    "responses": {"200": {"description": "accepted"}},
                }
            }
        },
        "components": {"schemas": schema["components"]["schemas"]},
    }
    operation = schemathesis.openapi.from_dict(document)["/individual"]["POST"]
    seen_kinds: set[str] = set()

    @hypothesis_settings(
        max_examples=EXAMPLES, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(operation.as_strategy())
    def parses(case: Any) -> None:
        try:
            parsed = parse_individual(case.body)
        except CimValidationError as exc:
            assert exc.field.endswith(("birthDate", "doNotMarketFromUpdateDate")), (exc.field, exc.message, case.body)
            assert any(rule in exc.message for rule in RANGE_RULES), (exc.field, exc.message, case.body)
            return
        seen_kinds.update(kind for kind, points in (("email", parsed.emails), ("phone", parsed.phones)) if points)

    parses()
    # The generator reached the contact points, not only empty individuals.
    assert seen_kinds == {"email", "phone"}


BAD_INDIVIDUALS = [
    pytest.param({"firstName": {"a": 1}}, id="name-object"),
    pytest.param({"lastName": "x" * 101}, id="name-too-long"),
    pytest.param({"partyType": "Organization"}, id="party-type"),
    pytest.param({"birthDate": "31/01/1990"}, id="birth-date-format"),
    pytest.param({"contactPoints": {"contactPointType": "ContactPointEmail"}}, id="points-not-a-list"),
    pytest.param({"contactPoints": [{"contactPointType": "ContactPointFax"}]}, id="unknown-kind"),
    pytest.param({"contactPoints": [{"contactPointType": "ContactPointEmail"}]}, id="email-missing"),
    pytest.param(
        {"contactPoints": [{"contactPointType": ["ContactPointEmail"], "emailAddress": "not an email"}]},
        id="email-invalid",
    ),
    pytest.param(
        {"contactPoints": [{"contactPointType": "ContactPointPhone", "telephoneNumber": "12"}]}, id="phone-short"
    ),
    pytest.param(
        {"contactPoints": [{"contactPointType": ["ContactPointPhone", "x"], "telephoneNumber": "+14155550100"}]},
        id="type-list-of-two",
    ),
    pytest.param(
        {"contactPoints": [{"contactPointType": "ContactPointEmail", "emailAddress": "a@b.co"}] * 51}, id="51-points"
    ),
    pytest.param({"externalIds": [{"externalId": "1", "externalIdType": ""}]}, id="id-type-empty"),
    pytest.param({"externalIds": [{"externalId": "x" * 256, "externalIdType": "POS"}]}, id="external-id-too-long"),
    pytest.param({"id": "x" * 256}, id="record-id-too-long"),
]


@pytest.mark.parametrize("individual", BAD_INDIVIDUALS)
def test_what_the_parser_refuses_the_schema_refuses(individual, individual_validator):
    with pytest.raises(CimValidationError):
        parse_individual(individual)
    assert not individual_validator.is_valid(individual), individual


# ---------------------------------------------------------------------------------------------
# Every refusal over HTTP carries a non-empty `errors` list naming the part of the request.
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def ingest_key(transactional_db) -> str:
    from integrations.models import ApiClient

    _, key = ApiClient.issue("schema-errors", ["ingest"], TEST_SOURCES)
    return key


def assert_problem(response: Any, status: int, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith(PROBLEM), response["Content-Type"]
    body = json.loads(response.content)
    assert body["status"] == status and body["title"]
    assert body["errors"] and all(set(e) == {"field", "message"} and e["message"] for e in body["errors"]), body
    assert body["errors"][0]["field"] == field, body
    return body


@pytest.mark.django_db(transaction=True)
def test_every_refusal_names_its_field(client, ingest_key):
    events = "/api/v1/events"
    # 401: no key, a wrong key.
    assert_problem(client.post(events, b"{}", content_type="application/json"), 401, "header.Authorization")
    wrong = {"HTTP_AUTHORIZATION": "Bearer hub_nope"}
    assert_problem(client.post(events, b"{}", content_type="application/json", **wrong), 401, "header.Authorization")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {ingest_key}"}
    # 403: the ingest key has no read scope.
    assert_problem(client.get("/api/v1/individuals?email=a@b.co", **auth), 403, "header.Authorization")
    # 404: a path no route matches, and an unknown golden record through a view.
    body = assert_problem(client.get("/api/v1/no-such-thing", **auth), 404, "path")
    assert "detail" in body
    # 405: a method the view does not take (DRF), and one a plain Django view refuses (require_POST).
    assert_problem(client.get(events, **auth), 405, "method")
    lifecycle = client.get("/api/v1/marketing-cloud/journey/validate")
    assert_problem(lifecycle, 405, "method")
    assert lifecycle["Allow"] == "POST"
    # 415 and 400.
    assert_problem(client.post(events, b"x", content_type="text/plain", **auth), 415, "header.Content-Type")
    assert_problem(client.post(events, b'{"events": 1}', content_type="application/json", **auth), 400, "events")
    # 401 from the journey endpoint and the ENS callback: the JWT is the body; the signature a header.
    journey = client.post("/api/v1/marketing-cloud/journey/execute", b"not-a-jwt", content_type="application/jwt")
    assert_problem(journey, 401, "body")
    ens = client.post("/api/v1/marketing-cloud/ens", b"[]", content_type="application/json")
    assert_problem(ens, 401, "header.x-sfmc-ens-signature")


@pytest.mark.django_db(transaction=True)
def test_a_throttled_key_gets_a_problem_with_retry_after(client, ingest_key, settings):
    settings.API_KEY_RATE = "1/minute"
    auth = {"HTTP_AUTHORIZATION": f"Bearer {ingest_key}"}
    events = "/api/v1/events"
    statuses = [client.post(events, b"{}", content_type="application/json", **auth) for _ in range(3)]
    throttled = [r for r in statuses if r.status_code == 429]
    assert throttled, [r.status_code for r in statuses]
    assert_problem(throttled[0], 429, "request")
    assert throttled[0].has_header("Retry-After")


@pytest.mark.django_db
def test_pages_outside_the_api_keep_their_html_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith(PROBLEM)
