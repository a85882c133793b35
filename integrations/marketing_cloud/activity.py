"""The Journey Builder custom activity, installable: config.json, its page, lifecycle calls.

Journey Builder loads a custom activity from the endpoint URL of an installed
package's "Journey Builder Activity" component: it reads ``config.json`` there and
shows ``index.html`` in an iframe while a marketer configures the activity. On
save, publish, validate and stop it calls the lifecycle URLs (JWT-signed, like the
execute call), and while a journey runs it calls ``execute`` once per contact.

The page (``static/marketing_cloud/activity.js``) binds the in-arguments to the journey's entry
source, ``{{Event."<eventDefinitionKey>".<Field>}}``, which compiles in every journey; a binding to
``{{Contact.Attribute."<set>".<Field>}}`` compiles only where Data Designer links a data extension
of that name, so it is used only for a set named in ``MC_ATTRIBUTE_SET``.

Business units: a custom activity reaches a unit through an installed package in that unit,
whose JWT Signing Secret is the unit's (``MC_BU_<NAME>_JWT_SECRET``). Every unit's package points
its Journey Builder Activity component at this one endpoint: ``config.json`` is the same for all
(the URLs, in-arguments and timeouts do not depend on the unit), and each call names its unit by
the secret that verifies it. Only the page differs in what it can say: it cannot tell which unit
shows it (Journey Builder loads it unsigned), so it lists every unit's data extension.
"""

from __future__ import annotations

import logging
from typing import Any

import jwt
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from hub.api.bodies import BodyTooLarge, read_body
from hub.problems import problem_response
from hub.strict_json import StrictJsonError
from integrations.marketing_cloud import business_units
from integrations.marketing_cloud.mapping import IN_ARGUMENTS
from integrations.marketing_cloud.views import JOURNEY_MAX_BODY, verify_journey_jwt_for_units

logger = logging.getLogger(__name__)

LIFECYCLE_ACTIONS = ("save", "publish", "validate", "stop")
# Journey Builder: timeout in ms (min 1,000, max 100,000); retryCount applies to 5xx and network errors.
EXECUTE_TIMEOUT_MS = 20000
EXECUTE_RETRY_COUNT = 5
EXECUTE_RETRY_DELAY_MS = 10000
CONCURRENT_REQUESTS = 5


# Bindings every journey can compile: the contact key, and the journey's default email address
# (Journey Settings point it at an entry-source or contact field).
ALWAYS_BOUND = {"SubscriberKey": "{{Contact.Key}}", "EmailAddress": "{{InteractionDefaults.Email}}"}


def contact_attribute_binding(attribute_set: str, field: str) -> str:
    """``{{Contact.Attribute."<set>".<field>}}``: compiles only where Data Designer links that set."""
    return '{{Contact.Attribute."' + attribute_set + '".' + field + "}}"


def in_argument_bindings(attribute_set: str = "") -> list[dict[str, str]]:
    """The in-arguments config.json starts the activity with: only bindings that compile.

    The contact key and the default email always do. The other columns are bound to the
    attribute set only when one is named (``MC_ATTRIBUTE_SET``); otherwise the configuration
    page binds them to the entry source, ``{{Event."<eventDefinitionKey>".<Field>}}``, once
    Journey Builder has told it the entry event's key.
    """
    bindings: list[dict[str, str]] = []
    for name in IN_ARGUMENTS:
        if name in ALWAYS_BOUND:
            bindings.append({name: ALWAYS_BOUND[name]})
        elif attribute_set:
            bindings.append({name: contact_attribute_binding(attribute_set, name)})
    return bindings


def activity_config(base_url: str) -> dict[str, Any]:
    base = base_url.rstrip("/")
    lifecycle = {action: {"url": f"{base}/{action}", "useJwt": True} for action in LIFECYCLE_ACTIONS}
    return {
        "workflowApiVersion": "1.1",
        # Not configured until the page has bound the entry source's fields: Journey Builder opens
        # it when the activity is dropped, and activates no journey with it unconfigured.
        "metaData": {"icon": f"{base}/icon.svg", "category": "customer", "isConfigured": False, "configOnDrop": True},
        "type": "REST",
        "lang": {
            "en-US": {
                "name": "Customer hub: golden record",
                "description": "Sends the contact to the customer hub, which links it to its golden record and "
                "writes the master ID back to the data extension.",
            }
        },
        "arguments": {
            "execute": {
                "inArguments": in_argument_bindings(settings.MC_ATTRIBUTE_SET),
                "outArguments": [],
                "url": f"{base}/execute",
                "verb": "POST",
                "format": "json",
                "useJwt": True,
                "timeout": EXECUTE_TIMEOUT_MS,
                "retryCount": EXECUTE_RETRY_COUNT,
                "retryDelay": EXECUTE_RETRY_DELAY_MS,
                "concurrentRequests": CONCURRENT_REQUESTS,
            }
        },
        "configurationArguments": lifecycle,
        "wizardSteps": [{"label": "Customer hub", "key": "hub"}],
        "userInterfaces": {"configModal": {"height": 360, "width": 640, "fullscreen": False}},
        "schema": {
            "arguments": {
                "execute": {
                    "inArguments": [
                        {
                            name: {
                                "dataType": "Email" if name == "EmailAddress" else "Text",
                                "direction": "in",
                                "isNullable": name not in ("SubscriberKey", "EmailAddress"),
                                "access": "visible",
                            }
                        }
                        for name in IN_ARGUMENTS
                    ],
                    "outArguments": [],
                }
            }
        },
    }


# Postmonger 0.0.16 as npm publishes it (jsDelivr serves a package's files unchanged); the
# hash is the SHA-384 of that file (`npm pack postmonger@0.0.16`), so a changed copy is refused.
POSTMONGER_URL = "https://cdn.jsdelivr.net/npm/postmonger@0.0.16/postmonger.min.js"
POSTMONGER_INTEGRITY = "sha384-jWmCc3nCjTHgBSLoWe3rCR20cHk8xPIKuGwtm2ylHOdMO1FjBhfo/Xx9WKnQKWYq"
# Journey Builder shows this page in an iframe on its own origin. No inline script or style:
# the page's own script and style are static files, and Postmonger is the one other script.
ACTIVITY_PAGE_CSP = (
    "default-src 'none'; "
    f"script-src 'self' {POSTMONGER_URL}; "
    "style-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; object-src 'none'; "
    "frame-ancestors https://*.exacttarget.com https://*.marketingcloudapps.com"
)


def _activity_base(request: HttpRequest) -> str:
    # Journey Builder only loads activities over HTTPS; behind a TLS proxy the request says http.
    url = request.build_absolute_uri("/api/v1/marketing-cloud/journey")
    if not settings.DEBUG and url.startswith("http://"):
        url = "https://" + url[len("http://") :]
    return url


@require_GET
def config_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(activity_config(_activity_base(request)))


@require_GET
def configuration_page(request: HttpRequest) -> HttpResponse:
    config = activity_config(_activity_base(request))
    defaults = dict(next(iter(item.items())) for item in config["arguments"]["execute"]["inArguments"])
    response = render(
        request,
        "marketing_cloud/activity.html",
        {
            # Each in-argument with what it is bound to until the page knows the entry event.
            "in_arguments": [(name, defaults.get(name, "")) for name in IN_ARGUMENTS],
            "in_argument_names": " ".join(IN_ARGUMENTS),
            "attribute_set": settings.MC_ATTRIBUTE_SET,
            "de_key": business_units.default_unit().de_key,
            # With several units, which data extension each unit's master IDs are written to.
            "unit_de_keys": [(u.label, u.de_key) for u in business_units.units() if u.configured],
            "master_id_field": settings.MC_MASTER_ID_FIELD,
            "execute_url": config["arguments"]["execute"]["url"],
            "postmonger_url": POSTMONGER_URL,
            "postmonger_integrity": POSTMONGER_INTEGRITY,
        },
    )
    response.headers["Content-Security-Policy"] = ACTIVITY_PAGE_CSP
    response.xframe_options_exempt = True
    return response


@require_GET
def icon(request: HttpRequest) -> HttpResponse:
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 40 40"><circle cx="20" cy="20" r="18" '
        'fill="#0b5cab"/><circle cx="20" cy="15" r="6" fill="#fff"/><path d="M8 32c2-7 7-10 12-10s10 3 12 10" '
        'fill="#fff"/></svg>'
    )
    return HttpResponse(svg, content_type="image/svg+xml")


@csrf_exempt
@require_POST
def lifecycle(request: HttpRequest, action: str) -> JsonResponse:
    """save / publish / validate / stop: verified like execute, acknowledged with 200."""
    if action not in LIFECYCLE_ACTIONS:
        return problem_response(404, "Not found", f"Lifecycle actions: {', '.join(LIFECYCLE_ACTIONS)}.")
    try:
        body = read_body(request, JOURNEY_MAX_BODY)
    except BodyTooLarge:
        return problem_response(413, "Body too large", f"A lifecycle call is limited to {JOURNEY_MAX_BODY} bytes.")
    try:
        claims, unit = verify_journey_jwt_for_units(body.strip(), business_units.units())
    except jwt.InvalidTokenError:
        return problem_response(
            401,
            "Invalid token",
            "The body is not a JWT signed HS256 with the installed package's secret.",
            field="body",
        )
    except StrictJsonError as exc:
        return problem_response(400, "Invalid claims", errors=[{"field": exc.field, "message": exc.message}])
    logger.info(
        "journey activity %s (business unit %s): journey %s activity %s",
        action,
        unit.name,
        claims.get("journeyId") or claims.get("originalDefinitionId") or "-",
        claims.get("activityObjectID") or claims.get("activityId") or "-",
    )
    return JsonResponse({"success": True})
