"""A local HTTP emulator of the Salesforce Marketing Cloud endpoints the hub talks to.

The hub is developed and tested without a real Marketing Cloud tenant, so this module answers the
auth (``/v2/token``) and data extension REST calls with the same request and error shapes as SFMC,
and adds switches for latency and injected failures so retry and back-off code can be exercised.
Its data extensions are strict, as a tenant's are: each is declared with its fields (by default
:data:`~integrations.marketing_cloud.schema.INDIVIDUAL`, the one declaration the hub, ``make run``
and the tests share), and writes that do not fit are refused with Marketing Cloud's error shape
(see :mod:`.data_extensions`). Row reads answer as a tenant does: lower-cased field names, dates in
Marketing Cloud system time, 2,500 rows a page and ``links.next`` continuing through a request
token. The SOAP endpoint (``/Service.asmx``) retrieves data extensions and their fields
(:mod:`.soap`), which ``manage.py mc_check`` reads.
It also plays the Event Notification Service (ENS): callbacks are registered and verified through
``/platform/v1/ens-*`` as on a real tenant, and :meth:`MarketingCloudSandbox.deliver_ens` pushes
signed event batches to them (the signing lives in :mod:`.ens`).

It deliberately imports nothing from Django: tests and benchmarks start it as a plain library,
``make run`` as ``python -m sandboxes.marketing_cloud`` (:mod:`.__main__`), and other processes drive
it over the ``/__sandbox/`` control endpoints.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from integrations.marketing_cloud.schema import INDIVIDUAL, DataExtensionField, DataExtensionSchema
from sandboxes.http import ApiError, EmulatorServer, Fault, Reply
from sandboxes.marketing_cloud import soap
from sandboxes.marketing_cloud import subscribers as subs
from sandboxes.marketing_cloud.async_rows import AsyncRows
from sandboxes.marketing_cloud.data_extensions import (
    SandboxDataExtension,
    data_extension_error,
    unknown_data_extension,
)
from sandboxes.marketing_cloud.ens import (
    ALL_SUBSCRIBERS_LIST_ID,
    KEY_ENCODINGS,
    SIGNATURE_HEADER,
    encode_batch,
    new_signature_key,
    sign_ens,
    tamper_signature,
)

__all__ = ["FAULT_KINDS", "MarketingCloudSandbox", "SandboxConfig"]

DOCS_URL = "https://developer.salesforce.com/docs/atlas.en-us.mc-apis.meta/mc-apis/error-handling.htm"
OAUTH_ERROR_URI = "https://developer.salesforce.com"
# What an installed package with the hub's permissions grants (shared reference §3.4).
TOKEN_SCOPE = (
    "data_extensions_read data_extensions_write list_and_subscribers_read list_and_subscribers_write "
    "event_notification_callback_create event_notification_callback_read event_notification_callback_update "
    "event_notification_callback_delete event_notification_subscription_create "
    "event_notification_subscription_read event_notification_subscription_update "
    "event_notification_subscription_delete"
)
TOKEN_PATH = "/v2/token"
FAULT_KINDS = frozenset({"429", "429-blocked", "500", "503", "400", "403", "401", "timeout", "reset"})

# SFMC caps the GET rowset page size at 2500 and uses that when none is asked for.
MAX_PAGE_SIZE = 2500
DEFAULT_RETRY_AFTER = 5

_ROW_PATH = re.compile(r"^/hub/v1/dataevents/key:([^/]+)/rows/([^/]+)$")
_ROWSET_PATH = re.compile(r"^/hub/v1/dataevents/key:([^/]+)/rowset$")
_QUERY_PATH = re.compile(r"^/data/v1/customobjectdata/key/([^/]+)/rowset/?$")
# links.next of a row read: the continuation of the same result through its request token.
_TOKEN_QUERY_PATH = re.compile(r"^/data/v1/customobjectdata/token/([^/]+)/rowset/?$")
# The asynchronous rows API (see .async_rows): by external key or by the data extension's ID.
_ASYNC_ROWS_PATH = re.compile(r"^/data/v1/async/dataextensions/([^/]+)/rows$")
_ASYNC_STATUS_PATH = re.compile(r"^/data/v1/async/([^/]+)/(status|results)$")
SOAP_PATH = "/Service.asmx"
CONTACTS_DELETE_PATH = "/contacts/v1/contacts/actions/delete"
CONTACTS_DELETE_STATUS_PATH = "/contacts/v1/contacts/actions/delete/status"
_CONTROL_FINISH_DELETE = re.compile(r"^/contact-deletions/([0-9]+)/finish$")
# A row read's request token lives this long (tokenExpireDateUtc of a real read is 20 minutes on).
ROW_TOKEN_TTL = 20 * 60
# The primary key value in a row path is usually a subscriber key or an email address: it is
# replaced before anything is logged so personal data never reaches a log.
_ROW_VALUE_IN_PATH = re.compile(r"(/rows/[^/]*?(?::|%3[aA]))[^/]*")
_FILTER_CLAUSE = re.compile(r"\s*([A-Za-z_][\w]*)\s+(eq|ne|gt|ge|lt|le)\s+'((?:[^']|'')*)'\s*", re.IGNORECASE)
_FILTER_AND = re.compile(r"and\b", re.IGNORECASE)
# ENS (Event Notification Service) routes, answered with the shapes of Salesforce's reference pages.
ENS_CALLBACKS_PATH = "/platform/v1/ens-callbacks"
ENS_VERIFY_PATH = "/platform/v1/ens-verify"
ENS_SUBSCRIPTIONS_PATH = "/platform/v1/ens-subscriptions"
ENS_REGENERATE_PATH = "/platform/v1/ens-regenerate"
_ENS_CALLBACK_PATH = re.compile(r"^/platform/v1/ens-callbacks/([^/]+)$")
_ENS_SUBSCRIPTION_PATH = re.compile(r"^/platform/v1/ens-subscriptions/([^/]+)$")
_ENS_SUBSCRIPTIONS_BY_CB_PATH = re.compile(r"^/platform/v1/ens-subscriptions-by-cb/([^/]+)$")
ENS_MIN_BATCH, ENS_MAX_BATCH = 100, 1000
ENS_MAX_SUBSCRIPTIONS_PER_CALLBACK = 200
# Fully qualified event types are NotificationEventCategory.NotificationEventType.
_ENS_EVENT_TYPE = re.compile(r"^[A-Za-z]+\.[A-Za-z]+$")
_ENS_FILTER = re.compile(r"^([A-Za-z_][\w]*)=(.*)$", re.DOTALL)


def _unit_key(mid: str, de_key: str) -> str:
    """Where a data extension is kept: by its key in the parent unit, by MID and key in another unit."""
    return f"{mid}/{de_key.lower()}" if mid else de_key.lower()


@dataclass
class SandboxConfig:
    """Credentials the sandbox accepts and the knobs that make it misbehave."""

    client_id: str = "sandbox-client-id"
    client_secret: str = "sandbox-client-secret"
    account_id: str = ""  # MID; when set, a token request naming another MID is refused
    # MIDs of further business units (comma-separated) a token may be requested for with account_id;
    # each has its own data extensions (``declare(schema, mid=...)``), and a call acts on its token's unit.
    business_units: str = ""
    token_ttl: int = 1080  # seconds, returned as expires_in (SFMC issues 18-minute tokens)
    latency_ms: int = 0  # added before every MC endpoint response
    fail_rate: float = 0.0  # fraction of non-token REST calls answered with a random 500
    seed: int | None = None
    # Real ENS only accepts https://host[/path] callback URLs (no port, no query). Tests and
    # `make run` use http://127.0.0.1:<port>, so that is allowed unless this is switched off.
    allow_insecure_callbacks: bool = True
    ens_verify_timeout: float = 30.0  # seconds ENS waits for the callback to answer its verification POST
    ens_delivery_timeout: float = 3.0  # seconds a callback has to answer a notification batch
    scope: str = TOKEN_SCOPE  # the scopes tokens are granted, space-separated
    soap_page_size: int = subs.SOAP_PAGE_SIZE  # Subscriber results per SOAP Retrieve page
    # The asynchronous rows API (.async_rows): seconds until a request completes; status calls per
    # request answered "not found" first; the next N rows processed fail with a deadlock; the
    # largest results page.
    async_delay: float = 0.0
    async_not_found_polls: int = 0
    async_deadlock_rows: int = 0
    async_max_results_page: int = 2500


@dataclass
class _RowToken:
    """A row read's result: its rows' keys, fixed at the first page, read page by page."""

    de_key: str
    keys: list[str]
    page_size: int
    expires: float  # monotonic
    expires_utc: datetime


@dataclass
class _EnsCallback:
    callback_id: str
    name: str
    url: str
    max_batch_size: int
    signature_key: str
    verification_key: str
    verified: bool = False
    unit: str = ""  # the business unit (MID, "" the parent) whose token created it: only that unit sees it

    def view(self) -> dict[str, Any]:
        """The callback as GET returns it: never with its signature or verification key."""
        return {
            "callbackId": self.callback_id,
            "callbackName": self.name,
            "url": self.url,
            "maxBatchSize": self.max_batch_size,
            "status": "verified" if self.verified else "unverified",
            "statusReason": "none" if self.verified else "Awaiting verification",
        }


@dataclass
class _EnsSubscription:
    subscription_id: str
    name: str
    callback_id: str
    event_types: list[str]
    filters: list[str]
    status: str = "active"

    def matches(self, event: dict[str, Any]) -> bool:
        """Whether ENS would send ``event`` through this subscription.

        Filters are ``name=value`` pairs that must all hold. The filterable data items Salesforce
        lists (definitionKey, statusCode, bounceCode, smtpReason) live either on the event or in
        its ``info``, so both places are looked at.
        """
        if self.status != "active" or event.get("eventCategoryType") not in self.event_types:
            return False
        info = event.get("info") if isinstance(event.get("info"), dict) else {}
        for item in self.filters:
            name, _, expected = item.partition("=")
            actual = event.get(name, info.get(name))
            if actual is None or str(actual) != expected:
                return False
        return True


def _rest_error(status: int, errorcode: int, message: str, documentation: str = DOCS_URL) -> ApiError:
    return ApiError(status, {"message": message, "errorcode": errorcode, "documentation": documentation})


def _oauth_error(status: int, error: str, description: str) -> Reply:
    return Reply(status, {"error": error, "error_description": description, "error_uri": OAUTH_ERROR_URI})


def redact_path(path: str) -> str:
    """Return ``path`` without its query string and with any row key value masked, safe to log."""
    path = path.split("?", 1)[0]
    return _ROW_VALUE_IN_PATH.sub(r"\1*", path)


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _rest_error(400, 10004, "Invalid message format") from None


def _checked_item(item: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``keys`` and ``values`` of one rowset item, both objects (values may be empty)."""
    if not isinstance(item, dict):
        raise _rest_error(400, 10004, "Invalid message format")
    keys, values = item.get("keys"), item.get("values")
    if not isinstance(keys, dict) or not keys:
        raise _rest_error(400, 10002, "Missing required field: keys")
    if not isinstance(values, dict):
        raise _rest_error(400, 10002, "Missing required field: values")
    return keys, values


def _parse_filter(expression: str) -> list[tuple[str, str, str]]:
    """Parse ``Col op 'value' [and Col op 'value' ...]``; anything richer is refused as SFMC would."""
    clauses = []
    position = 0
    while True:
        match = _FILTER_CLAUSE.match(expression, position)
        if match is None:
            raise _rest_error(400, 10005, "Invalid value")
        column, operator, literal = match.groups()
        clauses.append((column.lower(), operator.lower(), literal.replace("''", "'")))
        position = match.end()
        if position == len(expression):
            return clauses
        joiner = _FILTER_AND.match(expression, position)
        if joiner is None:
            raise _rest_error(400, 10005, "Invalid value")
        position = joiner.end()


def _parse_order(expression: str) -> list[tuple[str, bool]]:
    order = []
    for part in expression.split(","):
        words = part.split()
        if not words or len(words) > 2:
            raise _rest_error(400, 10005, "Invalid value")
        direction = words[1].lower() if len(words) == 2 else "asc"
        if direction not in ("asc", "desc"):
            raise _rest_error(400, 10005, "Invalid value")
        order.append((words[0].lower(), direction == "desc"))
    return order


def _post_json(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> tuple[int, str]:
    """POST ``body`` to ``url``; return (status, reason), with status 0 when no HTTP answer came.

    http.client rather than urllib: urllib raises on non-2xx and follows nothing useful here, and
    the server module stays free of third-party imports.
    """
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection = connection_class(parts.hostname or "", parts.port, timeout=timeout)
    except ValueError as error:  # e.g. a non-numeric port
        return 0, str(error)
    try:
        connection.request("POST", target, body=body, headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        response.read()
        return response.status, response.reason
    except TimeoutError:
        return 0, "Timeout"
    except (OSError, http.client.HTTPException) as error:
        return 0, type(error).__name__
    finally:
        connection.close()


def _callback_url_problem(url: str, insecure_ok: bool) -> str | None:
    """Why ENS would refuse ``url`` as a callback URL, or None when it is acceptable."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a malformed port
    except ValueError:
        return "The url must be in the format https://host[/path]"
    if parts.scheme not in (("https", "http") if insecure_ok else ("https",)) or not parts.hostname:
        return "The url must be in the format https://host[/path]"
    # Query strings are refused even in insecure mode: a real tenant never accepts them.
    if parts.query or parts.fragment or parts.username or parts.password:
        return "A query string is not supported in the url"
    if port is not None and not insecure_ok:
        return "A port is not supported in the url"
    return None


def _ens_string(item: dict[str, Any], name: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value.strip():
        raise _rest_error(400, 10002, f"Missing required field: {name}")
    return value


def _positive_int(raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        number = int(raw)
    except ValueError:
        raise _rest_error(400, 10005, "Invalid value") from None
    if number < 1:
        raise _rest_error(400, 10005, "Invalid value")
    return number


_SOAP_PROPERTIES = {
    "DataExtension": (
        "ObjectID",
        "CustomerKey",
        "Name",
        "Description",
        "IsSendable",
        "IsTestable",
        "CategoryID",
        "CreatedDate",
        "ModifiedDate",
        "Client.ID",
    ),
    "DataExtensionField": (
        "ObjectID",
        "CustomerKey",
        "Name",
        "DefaultValue",
        "MaxLength",
        "IsRequired",
        "Ordinal",
        "IsPrimaryKey",
        "FieldType",
        "Scale",
        "CreatedDate",
        "ModifiedDate",
        "Client.ID",
        "DataExtension.CustomerKey",
    ),
}
# The tenant's answers carry these for every object; the sandbox's never change.
_SOAP_CREATED = "2024-01-02T03:04:05.000"
_SOAP_CLIENT_ID = "500001"


def _de_properties(de: SandboxDataExtension) -> dict[str, str]:
    return {
        "ObjectID": de.object_id,
        "CustomerKey": de.schema.key,
        "Name": de.schema.name,
        "Description": "",
        "IsSendable": "false",
        "IsTestable": "false",
        "CategoryID": "0",
        "CreatedDate": _SOAP_CREATED,
        "ModifiedDate": _SOAP_CREATED,
        "Client.ID": _SOAP_CLIENT_ID,
    }


def _field_properties(de: SandboxDataExtension, column: DataExtensionField, ordinal: int) -> dict[str, str]:
    return {
        "ObjectID": str(uuid.uuid5(uuid.UUID(de.object_id), column.name.lower())),
        # mcdev documents a field's CustomerKey as "[DEkey].[FieldName]".
        "CustomerKey": f"[{de.schema.key}].[{column.name}]",
        "Name": column.name,
        "DefaultValue": "",
        "MaxLength": "" if column.max_length is None else str(column.max_length),
        "IsRequired": "true" if column.is_required else "false",
        "Ordinal": str(ordinal),
        "IsPrimaryKey": "true" if column.is_primary_key else "false",
        "FieldType": column.field_type,
        "Scale": str(column.scale),
        "CreatedDate": _SOAP_CREATED,
        "ModifiedDate": _SOAP_CREATED,
        "Client.ID": _SOAP_CLIENT_ID,
        "DataExtension.CustomerKey": de.schema.key,
    }


def _declaration_view(schema: DataExtensionSchema) -> dict[str, Any]:
    return {
        "key": schema.key,
        "name": schema.name,
        "fields": [
            {
                "name": column.name,
                "fieldType": column.field_type,
                "maxLength": column.max_length,
                "isRequired": column.is_required,
                "isPrimaryKey": column.is_primary_key,
                "scale": column.scale,
            }
            for column in schema.fields
        ],
    }


def _declaration_from(data: dict[str, Any]) -> DataExtensionSchema:
    """A data extension declared through ``POST /__sandbox/data-extensions`` (the shape GET shows)."""
    key, fields = data.get("key"), data.get("fields")
    if not isinstance(key, str) or not key or not isinstance(fields, list) or not fields:
        raise ValueError("a declaration needs a key and a non-empty list of fields")
    columns = []
    for item in fields:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise ValueError("every field needs a name")
        length = item.get("maxLength")
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            raise ValueError(f"maxLength of {item['name']} must be a positive integer")
        columns.append(
            DataExtensionField(
                item["name"],
                str(item.get("fieldType") or "Text"),
                length,
                is_required=bool(item.get("isRequired")),
                is_primary_key=bool(item.get("isPrimaryKey")),
                scale=int(item.get("scale") or 0),
            )
        )
    return DataExtensionSchema(key, str(data.get("name") or key), tuple(columns))


def _required_scope(path: str, method: str) -> str | None:
    """The package scope a REST call needs (shared reference §3.4), or None for none."""
    if path.startswith("/hub/v1/dataevents/"):
        return "data_extensions_write"
    if path.startswith("/data/v1/customobjectdata/"):
        return "data_extensions_read"
    if path.startswith("/contacts/"):
        # The contacts routes' scope is not documented per route (inferred from the package's scopes).
        return "list_and_subscribers_read" if method == "GET" else "list_and_subscribers_write"
    if path.startswith("/data/v1/async/"):
        return "data_extensions_read" if method == "GET" else "data_extensions_write"
    if path.startswith(("/platform/v1/ens-callbacks", "/platform/v1/ens-verify")):
        action = {"GET": "read", "DELETE": "delete", "PATCH": "update", "PUT": "update"}.get(method, "create")
        return f"event_notification_callback_{action}"
    if path.startswith("/platform/v1/ens-subscriptions"):
        action = {"GET": "read", "DELETE": "delete", "PATCH": "update", "PUT": "update"}.get(method, "create")
        return f"event_notification_subscription_{action}"
    return None


class MarketingCloudSandbox(EmulatorServer[SandboxConfig]):
    """A threaded HTTP server answering like SFMC's auth and REST endpoints.

    The socket is bound in the constructor, so :attr:`url` is known (also with ``port=0``) before
    :meth:`start` or :meth:`serve_forever` is called.
    """

    name = "mc-sandbox"
    server_version = "MarketingCloudSandbox/1.0"
    token_path = TOKEN_PATH
    fault_kinds = FAULT_KINDS
    config_class = SandboxConfig
    content_type = "application/json; charset=utf-8"
    content_type_without_body = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        config: SandboxConfig | None = None,
        *,
        verbose: bool = False,
        data_extensions: Iterable[DataExtensionSchema] | None = None,
    ) -> None:
        """``data_extensions`` are the ones the tenant has (default: the hub's :data:`INDIVIDUAL`)."""
        super().__init__(host, port, config, verbose=verbose)
        self._declared: tuple[DataExtensionSchema, ...] = tuple(
            (INDIVIDUAL,) if data_extensions is None else data_extensions
        )
        self._des: dict[str, SandboxDataExtension] = {}
        self._row_tokens: dict[str, _RowToken] = {}
        self._async = AsyncRows()
        self._token_scopes: dict[str, frozenset[str]] = {}
        # The business unit (MID, "" for the parent unit) each token acts on, and the one of the call now served.
        self._token_units: dict[str, str] = {}
        self._call_unit = threading.local()
        self._soap_calls: list[tuple[str, str]] = []
        self._declare_initial()
        # Insertion-ordered, so "the first verified callback" is the one registered first.
        self._ens_callbacks: dict[str, _EnsCallback] = {}
        self._ens_subscriptions: dict[str, _EnsSubscription] = {}
        # Per business unit (MID, "" for the parent unit): subscriber key -> subscriber. A token sees
        # and changes only its own unit's subscribers, as each unit's All Subscribers is its own.
        self._subscribers: dict[str, dict[str, subs.SandboxSubscriber]] = {}
        self._continued: dict[str, subs.ContinuedRetrieve] = {}
        self._delete_operations: dict[int, subs.DeleteOperation] = {}
        self._next_ids = {"subscriber": 1000, "operation": 2000}

    # -- test and control API ----------------------------------------------------------------

    def rows(self, de_key: str, *, mid: str = "") -> dict[str, dict[str, str]]:
        """Primary key value (several key columns joined with "|") -> copy of the stored row.

        A row holds the fields written to it, by their declared names, as row reads show them.
        ``mid`` names a business unit of ``SandboxConfig.business_units`` (default: the parent unit).
        """
        with self._lock:
            self._async.run_due(self._des, self.config)
            de = self._des.get(_unit_key(mid, de_key))
            return {} if de is None else {pk: dict(row) for pk, row in de.rows.items()}

    def async_requests(self) -> list[dict[str, Any]]:
        """The asynchronous requests received, oldest first: ID, rows, whether complete, rows in error."""
        with self._lock:
            self._async.run_due(self._des, self.config)
            return [
                {
                    "requestId": r.request_id,
                    "unit": r.unit,
                    "rows": len(r.results) if r.completed else len(r.items),
                    "complete": r.completed is not None,
                    "errors": sum(1 for item in r.results if item["status"] != "OK"),
                }
                for r in self._async.requests.values()
            ]

    def forget_async_requests(self) -> None:
        """Lose every asynchronous request, as a tenant that never recorded them would.

        Their status then answers "not found" for good, and rows not yet written never are.
        """
        with self._lock:
            self._async.reset()

    def declare(self, schema: DataExtensionSchema, *, mid: str = "") -> None:
        """Create a data extension with these fields (empty), as a marketer would in Contact Builder.

        Declaring a key again replaces that data extension and drops its rows. :meth:`reset` goes
        back to the data extensions the sandbox was constructed with.
        """
        with self._lock:
            self._des[_unit_key(mid, schema.key)] = SandboxDataExtension(schema)

    def data_extensions(self) -> list[DataExtensionSchema]:
        with self._lock:
            return [de.schema for de in self._des.values()]

    def _declare_initial(self) -> None:
        # Called with the lock held by reset(), and before serving by the constructor.
        self._des = {schema.key.lower(): SandboxDataExtension(schema) for schema in self._declared}
        self._row_tokens.clear()

    def _checked_config_value(self, name: str, value: Any) -> Any:
        # Only the fields SFMC's config adds are checked here; latency, failures and seed by the base.
        if name in ("client_id", "client_secret", "account_id", "business_units"):
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string")
        elif name == "token_ttl":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer")
        elif name == "allow_insecure_callbacks":
            if not isinstance(value, bool):
                raise ValueError("allow_insecure_callbacks must be true or false")
        elif name in ("ens_verify_timeout", "ens_delivery_timeout"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        elif name == "scope":
            if not isinstance(value, str):
                raise ValueError("scope must be a space-separated string")
        elif name == "soap_page_size":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= subs.SOAP_PAGE_SIZE:
                raise ValueError(f"soap_page_size must be an integer from 1 to {subs.SOAP_PAGE_SIZE}")
        elif name == "async_delay":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError("async_delay must be a non-negative number of seconds")
        elif name in ("async_not_found_polls", "async_deadlock_rows", "async_max_results_page"):
            if isinstance(value, bool) or not isinstance(value, int) or value < (name == "async_max_results_page"):
                raise ValueError(
                    f"{name} must be a {'positive' if name == 'async_max_results_page' else 'non-negative'} integer"
                )
        else:
            return super()._checked_config_value(name, value)
        return value

    def _reset_state(self) -> None:
        self._declare_initial()
        self._async.reset()
        self._token_scopes.clear()
        self._token_units.clear()
        self._soap_calls.clear()
        self._ens_callbacks.clear()
        self._ens_subscriptions.clear()
        self._subscribers.clear()
        self._continued.clear()
        self._delete_operations.clear()
        self._next_ids = {"subscriber": 1000, "operation": 2000}

    # -- All Subscribers and contacts --------------------------------------------------------

    def _unit_of(self, mid: str) -> str:
        """The unit a MID names as the sandbox keeps it: "" for the parent unit (its MID or none)."""
        return "" if not mid or mid == self.config.account_id else mid

    def _unit_subscribers(self, unit: str) -> dict[str, subs.SandboxSubscriber]:
        """The subscribers of one unit (the caller holds the lock)."""
        return self._subscribers.setdefault(unit, {})

    def put_subscriber(
        self, key: str, email: str, status: str = "Active", *, modified: datetime | None = None, mid: str = ""
    ) -> dict[str, Any]:
        """Create or change a subscriber as the tenant's UI or an import would (no ENS event).

        ``mid`` names the business unit holding it (default: the parent unit).
        """
        if status not in subs.SUBSCRIBER_STATUSES:
            raise ValueError(f"status must be one of {', '.join(subs.SUBSCRIBER_STATUSES)}")
        moment = modified or datetime.now(UTC)
        with self._lock:
            unit = self._unit_subscribers(self._unit_of(mid))
            found = unit.get(key)
            if found is None:
                self._next_ids["subscriber"] += 1
                found = subs.SandboxSubscriber(self._next_ids["subscriber"], key, email, status, moment, moment)
                unit[key] = found
            found.email, found.modified = email, moment
            if status == "Unsubscribed" and found.status != "Unsubscribed":
                found.unsubscribed = moment
            found.status = status
            return found.view()

    def soap_calls(self) -> list[tuple[str, str]]:
        """Each SOAP call received, oldest first: its operation and the business unit it acted on ("": the parent)."""
        with self._lock:
            return list(self._soap_calls)

    def subscribers(self, *, mid: str = "") -> dict[str, dict[str, Any]]:
        """Subscriber key -> the subscriber as the tenant holds it, in unit ``mid`` (default: the parent unit)."""
        with self._lock:
            return {key: sub.view() for key, sub in self._unit_subscribers(self._unit_of(mid)).items()}

    def contact_deletions(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"operationID": op.operation_id, "keys": list(op.keys), "status": op.status, "unit": op.unit}
                for op in self._delete_operations.values()
            ]

    def finish_contact_deletion(self, operation_id: int, status: str = "Completed") -> None:
        """End a deletion operation, as the tenant's queue does hours later; Completed removes its contacts."""
        if status not in subs.FINAL_DELETE_STATUSES:
            raise ValueError(f"status must be one of {', '.join(subs.FINAL_DELETE_STATUSES)}")
        with self._lock:
            operation = self._delete_operations.get(operation_id)
            if operation is None:
                raise ValueError(f"no deletion operation {operation_id}")
            operation.status = operation.background_status = status
            if status == "Completed":
                for key in operation.keys:
                    self._unit_subscribers(operation.unit).pop(key, None)

    # -- Event Notification Service ----------------------------------------------------------

    def callbacks(self) -> list[dict[str, Any]]:
        """Registered ENS callbacks, oldest first, including the keys GET never shows.

        Besides the GET fields each has ``signatureKey``, ``verificationKey`` and ``verified``, so
        a test can check what the hub stored or verify a callback without a live receiver.
        """
        with self._lock:
            return [
                {
                    **callback.view(),
                    "signatureKey": callback.signature_key,
                    "verificationKey": callback.verification_key,
                    "verified": callback.verified,
                    "unit": callback.unit,
                }
                for callback in self._ens_callbacks.values()
            ]

    def subscriptions(self) -> list[dict[str, Any]]:
        """ENS subscriptions, oldest first, as ``GET /platform/v1/ens-subscriptions/{id}`` shows them."""
        with self._lock:
            return [self._subscription_view(subscription) for subscription in self._ens_subscriptions.values()]

    def deliver_ens(
        self,
        events: list[dict[str, Any]],
        *,
        callback_id: str | None = None,
        signature_key: str | None = None,
        tamper: bool = False,
        key_encoding: str = "base64",
    ) -> list[int]:
        """Send ``events`` to a callback as ENS does and return the HTTP status of each batch POST.

        Without ``callback_id`` the target is the first verified callback (in registration order)
        with an active subscription matching any of the events, and only the events its
        subscriptions cover (event type and filters) are sent, like real ENS; if no callback
        qualifies nothing is sent and ``[]`` is returned. With ``callback_id`` every event goes to
        that callback, verified or not, which is a test override ENS itself never does.

        Events keep their order and are split into batches of the callback's ``maxBatchSize``.
        Each batch is signed with the callback's signature key, or ``signature_key`` if given,
        read as ``key_encoding`` says (``"base64"``-decoded or ``"raw"`` bytes: tenants' readings
        are not documented, see ``ens.signature_key_bytes``); ``tamper`` sends a well-formed but
        wrong signature. A status of 0 means no HTTP answer
        (connection refused, or none within ``ens_delivery_timeout`` -- ENS's 3 s limit). Failed
        batches are not retried: ENS would retry three times, but tests want each POST visible.
        """
        if not isinstance(events, list) or not all(
            isinstance(event, dict) and isinstance(event.get("eventCategoryType"), str) for event in events
        ):
            raise ValueError("events must be a list of objects, each with an eventCategoryType")
        if key_encoding not in KEY_ENCODINGS:
            raise ValueError(f"keyEncoding must be one of {', '.join(KEY_ENCODINGS)}")
        with self._lock:
            timeout = self.config.ens_delivery_timeout
            if callback_id is not None:
                target = self._ens_callbacks.get(callback_id)
                if target is None:
                    raise ValueError(f"no ENS callback with id {callback_id!r}")
                selected = list(events)
            else:
                target, selected = None, []
                for callback in self._ens_callbacks.values():
                    if not callback.verified:
                        continue
                    subscriptions = [
                        s for s in self._ens_subscriptions.values() if s.callback_id == callback.callback_id
                    ]
                    selected = [event for event in events if any(s.matches(event) for s in subscriptions)]
                    if selected:
                        target = callback
                        break
                if target is None:
                    return []
            url, batch_size = target.url, target.max_batch_size
            key = signature_key if signature_key is not None else target.signature_key
        statuses = []
        # Sent outside the lock: the hub's callback may well call back into the sandbox meanwhile.
        for start in range(0, len(selected), batch_size):
            body = encode_batch(selected[start : start + batch_size])
            signature = sign_ens(body, key, key_encoding)
            if tamper:
                signature = tamper_signature(signature)
            status, _ = _post_json(url, body, {SIGNATURE_HEADER: signature}, timeout)
            statuses.append(status)
        return statuses

    # -- request handling --------------------------------------------------------------------

    def _redact(self, path: str) -> str:
        return redact_path(path)

    def _random_failure_reply(self) -> Reply:
        return _rest_error(500, 50000, "Internal Server Error").reply

    def _unreadable_body_reply(self, status: int, message: str) -> Reply:
        # SFMC's error shape, with the HTTP status as error code and no documentation link.
        return _rest_error(status, status, message, "").reply

    def _fault_reply(self, fault: Fault, path: str) -> Reply:
        kind = fault.kind
        if path.lower() == SOAP_PATH.lower() and kind != "reset":
            return self._soap_fault_reply(kind)
        if kind == "429":
            wait = DEFAULT_RETRY_AFTER if fault.retry_after is None else fault.retry_after
            body = {"message": "Rate limit exceeded", "errorcode": 50100, "retryAfter": wait, "documentation": DOCS_URL}
            return Reply(429, body, {"Retry-After": str(wait)})
        if kind == "429-blocked":
            return _rest_error(429, 50200, "Your requests are temporarily blocked.").reply
        if kind == "500":
            return _rest_error(500, 50000, "Internal Server Error").reply
        if kind == "503":
            return _rest_error(503, 50000, "Service Unavailable").reply
        if kind == "400":
            return _rest_error(400, 10005, "Invalid value").reply
        if kind == "403":
            return _rest_error(403, 20000, "Insufficient privileges").reply
        if kind == "401":
            self.expire_tokens()
            return _rest_error(401, 0, "Not Authorized").reply
        return Reply(0, reset=True)  # "reset"

    def _soap_fault_reply(self, kind: str) -> Reply:
        """What the SOAP endpoint answers for an injected fault: a SOAP fault, never a JSON error.

        Throttling and server trouble are an HTTP 500 with a ``soap:Server`` fault (shared
        reference §3.4); a refused request is a ``soap:Client`` fault; an ended session is the
        ``q0:Security`` "Login Failed" fault.
        """
        if kind == "401":
            self.expire_tokens()
            payload = soap.fault("q0:Security", "Login Failed", actor=self.url + SOAP_PATH)
        elif kind in ("400", "403"):
            payload = soap.fault("soap:Client", "Server was unable to process request. ---> The request is invalid.")
        else:
            payload = soap.fault(
                "soap:Server", "Server was unable to process request. ---> Too many requests; try again later."
            )
        return Reply(500, raw=payload, content_type=soap.CONTENT_TYPE)

    def _route(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> Reply:
        routes: list[tuple[re.Pattern[str] | str, dict[str, Callable[..., Reply]]]] = [
            (TOKEN_PATH, {"POST": lambda m: self._issue_token(body)}),
            (_ROW_PATH, {"PUT": lambda m: self._put_row(m, body)}),
            (_ROWSET_PATH, {"POST": lambda m: self._post_rowset(m, body)}),
            (_QUERY_PATH, {"GET": lambda m: self._get_rowset(m, query)}),
            (_TOKEN_QUERY_PATH, {"GET": lambda m: self._continue_rowset(m, query)}),
            (CONTACTS_DELETE_PATH, {"POST": lambda m: self._delete_contacts(query, body)}),
            (CONTACTS_DELETE_STATUS_PATH, {"GET": lambda m: self._delete_status(query)}),
            (
                _ASYNC_ROWS_PATH,
                {
                    "PUT": lambda m: self._async_submit(m, body, upsert=True),
                    "POST": lambda m: self._async_submit(m, body, upsert=False),
                },
            ),
            (_ASYNC_STATUS_PATH, {"GET": lambda m: self._async_read(m, query)}),
            (
                ENS_CALLBACKS_PATH,
                {
                    "POST": lambda m: self._ens_create_callbacks(body),
                    "GET": lambda m: self._ens_list_callbacks(),
                    "PUT": lambda m: self._ens_update_callbacks(body),
                },
            ),
            (ENS_REGENERATE_PATH, {"PUT": lambda m: self._ens_regenerate(body)}),
            (
                _ENS_CALLBACK_PATH,
                {"GET": lambda m: self._ens_get_callback(m), "DELETE": lambda m: self._ens_delete_callback(m)},
            ),
            (ENS_VERIFY_PATH, {"POST": lambda m: self._ens_verify(body)}),
            (
                ENS_SUBSCRIPTIONS_PATH,
                {
                    "POST": lambda m: self._ens_create_subscriptions(body),
                    "GET": lambda m: Reply(200, self.subscriptions()),
                    "PUT": lambda m: self._ens_update_subscriptions(body),
                },
            ),
            (
                _ENS_SUBSCRIPTION_PATH,
                {"GET": lambda m: self._ens_get_subscription(m), "DELETE": lambda m: self._ens_delete_subscription(m)},
            ),
            (_ENS_SUBSCRIPTIONS_BY_CB_PATH, {"GET": lambda m: self._ens_subscriptions_by_callback(m)}),
        ]
        if path.lower() == SOAP_PATH.lower():
            # SOAP carries its token in the envelope, and answers errors as faults.
            if method != "POST":
                return Reply(405, raw=soap.fault("soap:Client", "Method Not Allowed"), content_type=soap.CONTENT_TYPE)
            return self._soap(body)
        for pattern, methods in routes:
            match = (path == pattern) if isinstance(pattern, str) else pattern.match(path)
            if not match:
                continue
            handler = methods.get(method)
            if handler is None:
                error = _rest_error(405, 405, "Method Not Allowed", "")
                error.reply.headers["Allow"] = ", ".join(methods)
                raise error
            if pattern != TOKEN_PATH:
                token = self._require_token(headers)
                self._require_scope(token, _required_scope(path, method))
                with self._lock:
                    self._call_unit.mid = self._token_units.get(token, "")
            return handler(match)
        raise _rest_error(404, 404, "Not Found", "")

    def _require_token(self, headers: Mapping[str, str]) -> str:
        scheme, _, token = (headers.get("Authorization") or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not self._token_is_live(token):
            raise _rest_error(401, 0, "Not Authorized")
        return token

    def _require_scope(self, token: str, scope: str | None) -> None:
        with self._lock:
            granted = self._token_scopes.get(token, frozenset())
        if scope is not None and scope not in granted:
            raise _rest_error(403, 20000, "Insufficient privileges")

    def _issue_token(self, body: bytes) -> Reply:
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            data = None
        if not isinstance(data, dict):
            return _oauth_error(400, "invalid_request", "The request body must be a JSON object.")
        if data.get("grant_type") != "client_credentials":
            return _oauth_error(
                400, "unsupported_grant_type", 'Use "client_credentials" as the value for the grant_type parameter.'
            )
        client_id, client_secret = data.get("client_id"), data.get("client_secret")
        if not isinstance(client_id, str) or not isinstance(client_secret, str):
            return _oauth_error(400, "invalid_request", "The client_id and client_secret parameters are required.")
        with self._lock:
            config = SandboxConfig(**asdict(self.config))
        # compare_digest on bytes: constant-time, and it accepts non-ASCII input unlike on str.
        good = secrets.compare_digest(client_id.encode(), config.client_id.encode())
        good = secrets.compare_digest(client_secret.encode(), config.client_secret.encode()) and good
        requested_mid = data.get("account_id")
        child_units = {mid.strip() for mid in config.business_units.split(",") if mid.strip()}
        unit = ""
        if requested_mid not in (None, "") and str(requested_mid) != config.account_id:
            if str(requested_mid) in child_units:
                unit = str(requested_mid)
            elif config.account_id or child_units:
                good = False
        if not good:
            return _oauth_error(
                401,
                "invalid_client",
                "Client authentication failed. Make sure that the client ID and client secret are valid.",
            )
        granted = frozenset(config.scope.split())
        asked = data.get("scope")
        if isinstance(asked, str) and asked.strip():
            # A token request may ask for fewer scopes than the package has, never for more.
            granted = granted & frozenset(asked.split())
        token = secrets.token_urlsafe(48)
        self._remember_token(token, config.token_ttl)
        with self._lock:
            self._token_scopes = {t: v for t, v in self._token_scopes.items() if t in self._tokens}
            self._token_scopes[token] = granted
            self._token_units = {t: v for t, v in self._token_units.items() if t in self._tokens}
            self._token_units[token] = unit
        base = self.url + "/"
        return Reply(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": config.token_ttl,
                "scope": " ".join(sorted(granted)),
                "soap_instance_url": base,
                "rest_instance_url": base,
            },
        )

    def _data_extension(self, key: str) -> SandboxDataExtension:
        """The data extension with external key ``key`` in the call's business unit; the caller holds the lock."""
        de = self._des.get(_unit_key(getattr(self._call_unit, "mid", ""), key))
        if de is None:
            raise unknown_data_extension(key)
        return de

    def _put_row(self, match: re.Match[str], body: bytes) -> Reply:
        de_key = unquote(match.group(1))
        # Split on the first colon after decoding, so a %3A-encoded separator works as well.
        pk_name, sep, pk_value = unquote(match.group(2)).partition(":")
        if not sep or not pk_name or not pk_value:
            raise _rest_error(400, 10005, "Invalid value")
        data = _parse_json(body)
        values = data.get("values") if isinstance(data, dict) else None
        if not isinstance(values, dict):
            raise _rest_error(400, 10002, "Missing required field: values")
        with self._lock:
            [(keys, row)] = self._data_extension(de_key).upsert([({pk_name: pk_value}, values)])
        return Reply(200, {"keys": keys, "values": row})

    def _post_rowset(self, match: re.Match[str], body: bytes) -> Reply:
        de_key = unquote(match.group(1))
        items = _parse_json(body)
        if not isinstance(items, list):
            raise _rest_error(400, 10004, "Invalid message format")
        checked = [_checked_item(item) for item in items]
        with self._lock:
            # Every row is checked before any is written: one bad row fails the whole rowset.
            self._data_extension(de_key).upsert(checked)
        return Reply(200, items)

    def _get_rowset(self, match: re.Match[str], query: str) -> Reply:
        de_key = unquote(match.group(1))
        # Parameter names are matched case-insensitively ($pagesize and $pageSize both occur).
        params = {name.lower(): values[-1] for name, values in parse_qs(query, keep_blank_values=True).items()}
        page = _positive_int(params.get("$page"), 1)
        page_size = min(_positive_int(params.get("$pagesize"), MAX_PAGE_SIZE), MAX_PAGE_SIZE)
        clauses = _parse_filter(params["$filter"]) if params.get("$filter") else []
        order = _parse_order(params["$orderby"]) if params.get("$orderby") else []
        now = time.monotonic()
        with self._lock:
            self._async.run_due(self._des, self.config)
            de = self._data_extension(de_key)
            keys = de.select(clauses, order)
            token = str(uuid.uuid4())
            # The result is fixed here: later pages come from it, whatever changes meanwhile
            # (what the request token is for; inferred from its 20-minute lifetime).
            self._row_tokens = {t: v for t, v in self._row_tokens.items() if v.expires > now}
            self._row_tokens[token] = _RowToken(
                de.schema.key,
                keys,
                page_size,
                now + ROW_TOKEN_TTL,
                datetime.now(UTC) + timedelta(seconds=ROW_TOKEN_TTL),
            )
        return self._rowset_page(token, page)

    def _continue_rowset(self, match: re.Match[str], query: str) -> Reply:
        params = {name.lower(): values[-1] for name, values in parse_qs(query, keep_blank_values=True).items()}
        page = _positive_int(params.get("$page"), 1)
        token = unquote(match.group(1))
        with self._lock:
            found = self._row_tokens.get(token)
        if found is None or found.expires <= time.monotonic():
            raise data_extension_error(400, 10000, "The request token is invalid or has expired.")
        return self._rowset_page(token, page)

    def _async_submit(self, match: re.Match[str], body: bytes, *, upsert: bool) -> Reply:
        ref = unquote(match.group(1))
        with self._lock:
            self._async.run_due(self._des, self.config)
            unit = getattr(self._call_unit, "mid", "")
            if ref.lower().startswith("key:"):
                object_id, key = "", ref[len("key:") :]
                store_key = _unit_key(unit, key)
            else:  # by the data extension's ID, among the token's unit's data extensions only
                object_id, key = ref, ""
                store_key = next(
                    (
                        k
                        for k, d in self._des.items()
                        if d.object_id == ref.lower() and k == _unit_key(unit, d.schema.key)
                    ),
                    "",
                )
            de = self._des.get(store_key)
            reference = f"[Id: {object_id}, Key: {key}]"
            return self._async.submit(
                de, reference, body, upsert=upsert, config=self.config, des=self._des, store_key=store_key, unit=unit
            )

    def _async_read(self, match: re.Match[str], query: str) -> Reply:
        request_id, what = unquote(match.group(1)), match.group(2)
        params = {name.lower(): values[-1] for name, values in parse_qs(query, keep_blank_values=True).items()}
        with self._lock:
            self._async.run_due(self._des, self.config)
            unit = getattr(self._call_unit, "mid", "")
            if what == "status":
                return self._async.status(request_id, unit)
            page = _positive_int(params.get("$page"), 1)
            size = _positive_int(params.get("$pagesize"), 0) if params.get("$pagesize") else None
            return self._async.results(request_id, page, size, self.config, unit)

    def _rowset_page(self, token: str, page: int) -> Reply:
        with self._lock:
            found = self._row_tokens[token]
            de = self._data_extension(found.de_key)
            start = (page - 1) * found.page_size
            items = [de.read_item(pk) for pk in found.keys[start : start + found.page_size]]
            object_id, key, total = de.object_id, de.schema.key, len(found.keys)
            page_size, expires = found.page_size, found.expires_utc
        # The links a tenant gives, relative to the REST base's /data (a public client's recorded
        # answer: "/v1/customobjectdata/token/<requestToken>/rowset?$page=2").
        links = {"self": f"/v1/customobjectdata/token/{token}/rowset?$page={page}"}
        if start + page_size < total:
            links["next"] = f"/v1/customobjectdata/token/{token}/rowset?$page={page + 1}"
        return Reply(
            200,
            {
                "links": links,
                "requestToken": token,
                "tokenExpireDateUtc": expires.replace(tzinfo=None).isoformat(timespec="milliseconds"),
                "customObjectId": object_id,
                "customObjectKey": key,
                "pageSize": page_size,
                "page": page,
                "count": total,
                "top": 0,
                "items": items,
            },
        )

    # -- SOAP --------------------------------------------------------------------------------

    def _soap(self, body: bytes) -> Reply:
        def xml(status: int, payload: bytes) -> Reply:
            return Reply(status, raw=payload, content_type=soap.CONTENT_TYPE)

        try:
            token, operation, request = soap.parse_request(body)
        except soap.SoapRequestError:
            return xml(500, soap.fault("soap:Client", "Server was unable to read request."))
        if not self._token_is_live(token):
            return xml(500, soap.fault("q0:Security", "Login Failed", actor=self.url + SOAP_PATH))
        with self._lock:
            granted = self._token_scopes.get(token, frozenset())
            unit = self._token_units.get(token, "")
            self._soap_calls.append((operation, unit))
        if operation == "UpdateRequest":
            return self._soap_update(body, granted, unit)
        if request is None:
            return xml(500, soap.fault("soap:Client", f"The sandbox does not implement {operation}."))
        continue_id, date_value = subs.parse_retrieve_extras(body)
        if continue_id or request.object_type == "Subscriber":
            if "list_and_subscribers_read" not in granted:
                return xml(200, soap.retrieve_response([], overall_status="Error: Insufficient privileges"))
            status, results, request_id = self._soap_retrieve_subscribers(request, continue_id, date_value, unit)
            return xml(
                200,
                soap.retrieve_response(
                    results, overall_status=status, relates_to=request.message_id, request_id=request_id
                ),
            )
        if "data_extensions_read" not in granted:
            return xml(200, soap.retrieve_response([], overall_status="Error: Insufficient privileges"))
        status, results = self._soap_retrieve(request, unit)
        return xml(200, soap.retrieve_response(results, overall_status=status, relates_to=request.message_id))

    def _soap_retrieve(
        self, request: soap.RetrieveRequest, unit: str = ""
    ) -> tuple[str, list[tuple[str, list[tuple[str, str]]]]]:
        kind = request.object_type
        if kind not in _SOAP_PROPERTIES:
            return f"Error: Unable to find object type {kind or '(none)'}", []
        known = _SOAP_PROPERTIES[kind]
        unknown = [p for p in request.properties if p not in known]
        if unknown or not request.properties:
            names = ", ".join(unknown) or "(none)"
            return f"Error: The Request Property(s) {names} do not match with the fields of {kind} retrieve", []
        # Filters the hub and the public tools use: a data extension by key or name, fields by
        # their data extension's key.
        filterable = ("CustomerKey", "Name") if kind == "DataExtension" else ("DataExtension.CustomerKey",)
        filter_on, wanted = None, None
        if request.filter is not None:
            filter_on, operator, values = request.filter
            if filter_on not in filterable or operator not in ("equals", "IN") or not values:
                return f"Error: The filter on {filter_on or '(none)'} is not supported by the sandbox", []
            wanted = {value.lower() for value in values}
        results: list[tuple[str, list[tuple[str, str]]]] = []
        with self._lock:
            # The token's unit's data extensions only (a child unit's are kept under its MID).
            des = [de for key, de in self._des.items() if key == _unit_key(unit, de.schema.key)]
        for de in des:
            compared = de.schema.name if filter_on == "Name" else de.schema.key
            if wanted is not None and compared.lower() not in wanted:
                continue
            if kind == "DataExtension":
                row = _de_properties(de)
                results.append(("DataExtension", [(p, row[p]) for p in request.properties]))
                continue
            for ordinal, column in enumerate(de.schema.fields, start=1):
                row = _field_properties(de, column, ordinal)
                results.append(("DataExtensionField", [(p, row[p]) for p in request.properties]))
        return "OK", results

    def _soap_retrieve_subscribers(
        self, request: soap.RetrieveRequest, continue_id: str, date_value: str, unit: str
    ) -> tuple[str, list[tuple[str, list[tuple[str, str]]]], str]:
        """A page of the Subscribers of ``unit`` (the token's): (OverallStatus, results, RequestID)."""
        with self._lock:
            page_size = self.config.soap_page_size
            found = self._unit_subscribers(unit)
            if continue_id:
                continued = self._continued.pop(continue_id, None)
                if continued is not None and continued.unit != unit:
                    continued = None  # another unit's read: its RequestID means nothing to this token
                if continued is None:
                    return "Error: The continue request is invalid or has expired", [], ""
            else:
                unknown = [p for p in request.properties if p not in subs.SUBSCRIBER_PROPERTIES]
                if unknown or not request.properties:
                    names = ", ".join(unknown) or "(none)"
                    return (
                        f"Error: The Request Property(s) {names} do not match with the fields of Subscriber retrieve",
                        [],
                        "",
                    )
                matched = self._matching_subscribers(request, date_value, found)
                if isinstance(matched, str):
                    return matched, [], ""
                continued = subs.ContinuedRetrieve(matched, 0, request.properties, page_size, unit)
            keys = continued.matched[continued.offset : continued.offset + continued.page_size]
            client_id = unit or self.config.account_id or subs.PARENT_CLIENT_ID
            results = [
                ("Subscriber", [(p, found[k].properties(client_id)[p]) for p in continued.properties])
                for k in keys
                if k in found
            ]
            request_id = str(uuid.uuid4())
            continued.offset += continued.page_size
            if continued.offset < len(continued.matched):
                self._continued[request_id] = continued
                return "MoreDataAvailable", results, request_id
            return "OK", results, request_id

    def _matching_subscribers(
        self, request: soap.RetrieveRequest, date_value: str, unit: dict[str, subs.SandboxSubscriber]
    ) -> list[str] | str:
        """The keys of ``unit``'s subscribers a Retrieve's filter matches (the caller holds the lock), or its error."""
        everyone = sorted(unit.values(), key=lambda s: s.subscriber_id)
        if request.filter is None:
            return [s.key for s in everyone]
        prop, operator, values = request.filter
        if prop in ("ModifiedDate", "CreatedDate"):
            moment = subs.parse_date_value(date_value) if date_value else None
            if moment is None or operator not in ("greaterThan", "lessThan"):
                return f"Error: The filter on {prop} needs greaterThan or lessThan and a DateValue"
            field = "modified" if prop == "ModifiedDate" else "created"
            after = operator == "greaterThan"
            return [s.key for s in everyone if (getattr(s, field) > moment) == after and getattr(s, field) != moment]
        if prop in ("SubscriberKey", "EmailAddress") and operator in ("equals", "IN") and values:
            wanted = set(values) if prop == "SubscriberKey" else {v.lower() for v in values}
            field = "key" if prop == "SubscriberKey" else "email"
            return [s.key for s in everyone if (getattr(s, field) if field == "key" else s.email.lower()) in wanted]
        return f"Error: The filter on {prop or '(none)'} is not supported by the sandbox"

    def _soap_update(self, body: bytes, granted: frozenset[str], unit: str) -> Reply:
        def xml(status: int, payload: bytes) -> Reply:
            return Reply(status, raw=payload, content_type=soap.CONTENT_TYPE)

        try:
            kind, objects = subs.parse_update(body)
        except subs.SoapReadError as error:
            return xml(
                500,
                soap.fault(
                    "soap:Client",
                    f"Server was unable to read request. ---> There is an error in XML document. ---> {error}",
                ),
            )
        if kind != "Subscriber":
            return xml(500, soap.fault("soap:Client", f"The sandbox does not implement Update of {kind or '(none)'}."))
        results: list[tuple[str, dict[str, str], str]] = []
        now = datetime.now(UTC)
        with self._lock:
            found_in = self._unit_subscribers(unit)  # the token's unit: another unit's subscriber is not found
            for values in objects:
                if "list_and_subscribers_write" not in granted:
                    results.append(("Error", values, "Insufficient Privileges"))
                    continue
                found = found_in.get(values.get("SubscriberKey", "")) if values.get("SubscriberKey") else None
                if found is None and not values.get("SubscriberKey") and values.get("EmailAddress"):
                    email = values["EmailAddress"].lower()
                    found = next((s for s in found_in.values() if s.email.lower() == email), None)
                if found is None:
                    results.append(("Error", values, "Error: Subscriber not found."))
                    continue
                status = values.get("Status")
                if status and status != found.status:
                    if status == "Unsubscribed":
                        found.unsubscribed = now
                    found.status = status
                found.modified = now
                results.append(("OK", values, "Updated Subscriber."))
        return xml(200, subs.update_response(results))

    # -- contacts ------------------------------------------------------------------------------

    def _delete_contacts(self, query: str, body: bytes) -> Reply:
        params = parse_qs(query, keep_blank_values=True)
        if params.get("type", [""])[-1] != "keys":
            raise _rest_error(400, 10005, "Invalid value for type: the sandbox implements type=keys")
        data = _parse_json(body)
        if not isinstance(data, dict):
            raise _rest_error(400, 10004, "Invalid message format")
        by_name = {name.lower(): value for name, value in data.items()}
        unknown = sorted(set(by_name) - {"values", "deleteoperationtype"})
        if unknown:
            raise _rest_error(400, 10000, f"Unknown property: {unknown[0]}")
        values = by_name.get("values")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
            raise _rest_error(400, 10002, "Missing required field: Values")
        kind = by_name.get("deleteoperationtype")
        if kind is None:
            raise _rest_error(400, 10002, "Missing required field: DeleteOperationType")
        if kind != "ContactAndAttributes":
            raise _rest_error(400, 10005, "Invalid value for DeleteOperationType: AttributesOnly is reserved")
        now = datetime.now(UTC)
        with self._lock:
            self._next_ids["operation"] += 1
            operation_id = self._next_ids["operation"]
            self._delete_operations[operation_id] = subs.DeleteOperation(
                operation_id, list(values), now, unit=getattr(self._call_unit, "mid", "")
            )
        return Reply(
            200,
            {
                "operationInitiated": True,
                "operationID": operation_id,
                "requestServiceMessageID": str(uuid.uuid4()),
                "responseDateTime": now.astimezone(subs.SYSTEM_TIME).isoformat(timespec="microseconds"),
                "hasErrors": False,
                "resultMessages": [],
                "serviceMessageID": str(uuid.uuid4()),
            },
        )

    def _delete_status(self, query: str) -> Reply:
        raw = parse_qs(query, keep_blank_values=True).get("operationID", [""])[-1]
        if not raw.isdigit():
            raise _rest_error(400, 10005, "Invalid value for operationID")
        with self._lock:
            operation = self._delete_operations.get(int(raw))
            if operation is None or operation.unit != getattr(self._call_unit, "mid", ""):
                raise _rest_error(404, 404, f"Operation {raw} not found", "")
            list_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"op-{operation.operation_id}"))
            created = operation.created.astimezone(subs.SYSTEM_TIME).replace(tzinfo=None)
            view = {
                "operation": {
                    "listTypeID": 5,
                    "listIdentifier": list_id,
                    "listKey": list_id,
                    "expectedListCount": len(operation.keys),
                    "deleteType": "ContactAndAttributes",
                    "deleteListOnCompleted": False,
                    "operationID": operation.operation_id,
                    "eID": 500001,
                    "mID": 500001,
                    "employeeID": 30980,
                    "operationRequestID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"request-{operation.operation_id}")),
                    "status": operation.status,
                    "scheduledTime": created.isoformat(timespec="milliseconds"),
                    "retryCount": 0,
                    "createdDate": created.isoformat(timespec="seconds"),
                    "createdBy": 30980,
                    "modifiedDate": created.isoformat(timespec="seconds"),
                    "modifiedBy": 30980,
                },
                "requestServiceMessageID": str(uuid.uuid4()),
                "resultMessages": [],
                "serviceMessageID": str(uuid.uuid4()),
            }
            if operation.background_status:
                view["backgroundOperationsSummary"] = {"backgroundOperationStatusID": operation.background_status}
        return Reply(200, view)

    # -- ENS endpoints -----------------------------------------------------------------------

    def _ens_create_callbacks(self, body: bytes) -> Reply:
        items = _parse_json(body)
        if not isinstance(items, list) or not items:
            raise _rest_error(400, 10004, "Invalid message format")
        with self._lock:
            insecure_ok = self.config.allow_insecure_callbacks
            probe_timeout = self.config.ens_verify_timeout
        requested = []
        for item in items:
            if not isinstance(item, dict):
                raise _rest_error(400, 10004, "Invalid message format")
            name = _ens_string(item, "callbackName")
            url = _ens_string(item, "url")
            problem = _callback_url_problem(url, insecure_ok)
            if problem is not None:
                raise _rest_error(400, 10005, problem)
            size = item.get("maxBatchSize")
            if size is None:
                size = ENS_MAX_BATCH
            elif isinstance(size, bool) or not isinstance(size, int) or not ENS_MIN_BATCH <= size <= ENS_MAX_BATCH:
                raise _rest_error(400, 10005, "maxBatchSize must be at least 100 and no more than 1,000")
            # The verification key has the format of the documented example: 32 random bytes, base64.
            requested.append(_EnsCallback(str(uuid.uuid4()), name, url, size, new_signature_key(), new_signature_key()))
        ids = {callback.callback_id for callback in requested}
        with self._lock:
            urls = [callback.url for callback in requested]
            taken = {callback.url for callback in self._unit_callbacks().values()}
            if len(set(urls)) != len(urls) or taken.intersection(urls):
                raise _rest_error(400, 10005, "The url is already registered as a callback")
            # Stored before the probe so a hub that calls ens-verify from inside its answer to the
            # verification POST (as Salesforce suggests) finds the callback.
            for callback in requested:
                callback.unit = getattr(self._call_unit, "mid", "")
                self._ens_callbacks[callback.callback_id] = callback
        for callback in requested:
            challenge = {"callbackId": callback.callback_id, "verificationKey": callback.verification_key}
            # Outside the lock: the receiver may take up to 30 s, and may call the sandbox meanwhile.
            status, reason = _post_json(callback.url, json.dumps(challenge).encode("utf-8"), {}, probe_timeout)
            # Salesforce: anything but 200 OK (or no answer within 30 s) fails the creation with 400.
            if status != 200:
                with self._lock:
                    for callback_id in ids:
                        self._ens_callbacks.pop(callback_id, None)
                    for subscription in list(self._ens_subscriptions.values()):
                        if subscription.callback_id in ids:
                            del self._ens_subscriptions[subscription.subscription_id]
                detail = f"{status} {reason}".strip() if status else reason
                raise _rest_error(
                    400,
                    10005,
                    "Callback verification failed: MCMS_UWH_Runtime_GeneralFailure_probeCallbackLiveness: "
                    f"CallbackId is {callback.callback_id}. Could not verify callback url '{callback.url}'. Please "
                    "test that the url is reachable with a POST call and returns a 200 http status code. "
                    f"Status: {detail}",
                )
        return Reply(
            201,
            [
                {
                    "callbackName": callback.name,
                    "callbackId": callback.callback_id,
                    "url": callback.url,
                    # The only time ENS ever discloses the signature key.
                    "signatureKey": callback.signature_key,
                    "maxBatchSize": callback.max_batch_size,
                }
                for callback in requested
            ],
        )

    def _unit_callbacks(self) -> dict[str, _EnsCallback]:
        """The callbacks of the call's business unit (each unit's ENS is its own); the caller holds the lock."""
        unit = getattr(self._call_unit, "mid", "")
        return {key: callback for key, callback in self._ens_callbacks.items() if callback.unit == unit}

    def _unit_subscriptions(self) -> dict[str, _EnsSubscription]:
        """The subscriptions of the call's business unit's callbacks; the caller holds the lock."""
        mine = self._unit_callbacks()
        return {key: s for key, s in self._ens_subscriptions.items() if s.callback_id in mine}

    def _ens_list_callbacks(self) -> Reply:
        with self._lock:
            return Reply(200, [callback.view() for callback in self._unit_callbacks().values()])

    def _ens_update_callbacks(self, body: bytes) -> Reply:
        """``PUT /platform/v1/ens-callbacks``: rename a callback or change its batch size, never its URL.

        Salesforce's reference takes ``callbackId``, ``callbackName`` (both required) and
        ``maxBatchSize``; the callback keeps its URL, verification and signature key.
        """
        items = _parse_json(body)
        if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
            raise _rest_error(400, 10004, "Invalid message format")
        changes = []
        for item in items:
            callback_id, name = _ens_string(item, "callbackId"), _ens_string(item, "callbackName")
            size = item.get("maxBatchSize")
            if size is not None and (
                isinstance(size, bool) or not isinstance(size, int) or not ENS_MIN_BATCH <= size <= ENS_MAX_BATCH
            ):
                raise _rest_error(400, 10005, "maxBatchSize must be at least 100 and no more than 1,000")
            changes.append((callback_id, name, size))
        with self._lock:
            for callback_id, _, _ in changes:
                if callback_id not in self._unit_callbacks():
                    raise _rest_error(404, 404, "Callback ID doesn't exist")
            changed = False
            for callback_id, name, size in changes:
                callback = self._unit_callbacks()[callback_id]
                new_size = callback.max_batch_size if size is None else size
                changed |= (callback.name, callback.max_batch_size) != (name, new_size)
                callback.name, callback.max_batch_size = name, new_size
            if not changed:
                return Reply(304)  # "Callback already exists on the server"
            return Reply(
                200,
                [
                    {
                        key: self._unit_callbacks()[callback_id].view()[key]
                        for key in ("callbackId", "callbackName", "url", "maxBatchSize")
                    }
                    for callback_id, _, _ in changes
                ],
            )

    def _ens_regenerate(self, body: bytes) -> Reply:
        """``PUT /platform/v1/ens-regenerate``: a new signature key; the old one no longer signs."""
        items = _parse_json(body)
        if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
            raise _rest_error(400, 10004, "Invalid message format")
        ids = [_ens_string(item, "callbackId") for item in items]
        with self._lock:
            if any(callback_id not in self._unit_callbacks() for callback_id in ids):
                raise _rest_error(404, 404, "Callback ID doesn't exist")
            answer = []
            for callback_id in ids:
                callback = self._unit_callbacks()[callback_id]
                callback.signature_key = new_signature_key()
                answer.append(
                    {
                        "callbackName": callback.name,
                        "callbackId": callback.callback_id,
                        "url": callback.url,
                        "signatureKey": callback.signature_key,
                    }
                )
            return Reply(200, answer)

    def _ens_callback(self, match: re.Match[str]) -> _EnsCallback:
        """The callback named in the path; the caller holds the lock."""
        callback = self._unit_callbacks().get(unquote(match.group(1)))
        if callback is None:
            raise _rest_error(404, 404, "Callback ID doesn't exist")
        return callback

    def _ens_get_callback(self, match: re.Match[str]) -> Reply:
        with self._lock:
            return Reply(200, self._ens_callback(match).view())

    def _ens_delete_callback(self, match: re.Match[str]) -> Reply:
        with self._lock:
            callback = self._ens_callback(match)
            if any(s.callback_id == callback.callback_id for s in self._ens_subscriptions.values()):
                raise _rest_error(
                    409,
                    409,
                    "Subscriptions exist for the callback. Delete all subscriptions for the callback before "
                    "deleting the callback.",
                )
            del self._ens_callbacks[callback.callback_id]
        # Salesforce documents no body for this 200.
        return Reply(200)

    def _ens_verify(self, body: bytes) -> Reply:
        data = _parse_json(body)
        if not isinstance(data, dict):
            raise _rest_error(400, 10004, "Invalid message format")
        callback_id = _ens_string(data, "callbackId")
        key = _ens_string(data, "verificationKey")
        with self._lock:
            callback = self._unit_callbacks().get(callback_id)
            # Salesforce answers a wrong callback ID or verification key with 404, not 400.
            if callback is None or not secrets.compare_digest(key.encode(), callback.verification_key.encode()):
                raise _rest_error(404, 404, "Incorrect callback ID, verification key, or both")
            # Verifying again with the same key succeeds again, so a hub retrying after a lost
            # response is not punished; Salesforce documents no body, the callback view is a bonus.
            callback.verified = True
            return Reply(200, callback.view())

    def _ens_create_subscriptions(self, body: bytes) -> Reply:
        items = _parse_json(body)
        if not isinstance(items, list) or not items:
            raise _rest_error(400, 10004, "Invalid message format")
        wanted = []
        for item in items:
            if not isinstance(item, dict):
                raise _rest_error(400, 10004, "Invalid message format")
            name = _ens_string(item, "subscriptionName")
            callback_id = _ens_string(item, "callbackId")
            types = item.get("eventCategoryTypes")
            if not isinstance(types, list) or not types:
                raise _rest_error(400, 10002, "Missing required field: eventCategoryTypes")
            if not all(isinstance(t, str) and _ENS_EVENT_TYPE.match(t) for t in types):
                raise _rest_error(
                    400, 10005, "eventCategoryTypes must be NotificationEventCategory.NotificationEventType values"
                )
            filters = item.get("filters")
            filters = [] if filters is None else filters
            if not isinstance(filters, list) or not all(isinstance(f, str) and _ENS_FILTER.match(f) for f in filters):
                raise _rest_error(400, 10005, "filters must be a list of name=value strings")
            wanted.append(_EnsSubscription(str(uuid.uuid4()), name, callback_id, list(dict.fromkeys(types)), filters))
        if len({subscription.name for subscription in wanted}) != len(wanted):
            raise _rest_error(400, 10005, "subscriptionName must be unique")
        with self._lock:
            by_name = {subscription.name: subscription for subscription in self._unit_subscriptions().values()}
            result, new = [], []
            for subscription in wanted:
                callback = self._unit_callbacks().get(subscription.callback_id)
                if callback is None:
                    raise _rest_error(404, 404, "Callback ID doesn't exist")
                if not callback.verified:
                    raise _rest_error(400, 10005, "The callback must be verified before a subscription can use it")
                existing = by_name.get(subscription.name)
                if existing is not None:
                    same = (existing.callback_id, existing.event_types, existing.filters)
                    if same != (subscription.callback_id, subscription.event_types, subscription.filters):
                        raise _rest_error(400, 10005, "subscriptionName must be unique")
                    result.append(existing)
                    continue
                siblings = [*self._ens_subscriptions.values(), *new]
                in_use = sum(1 for s in siblings if s.callback_id == callback.callback_id)
                if in_use >= ENS_MAX_SUBSCRIPTIONS_PER_CALLBACK:
                    raise _rest_error(400, 10005, "A callback can have at most 200 subscriptions")
                new.append(subscription)
                result.append(subscription)
            if not new:
                # Salesforce: "304 No Change - Subscription already exists on the server".
                return Reply(304)
            for subscription in new:
                self._ens_subscriptions[subscription.subscription_id] = subscription
            return Reply(
                201,
                [
                    {
                        "callbackId": subscription.callback_id,
                        "callbackName": self._ens_callbacks[subscription.callback_id].name,
                        "subscriptionName": subscription.name,
                        "eventCategoryTypes": list(subscription.event_types),
                        "subscriptionId": subscription.subscription_id,
                        "filters": list(subscription.filters),
                        "status": subscription.status,
                    }
                    for subscription in result
                ],
            )

    def _ens_update_subscriptions(self, body: bytes) -> Reply:
        """``PUT /platform/v1/ens-subscriptions``: change a subscription's types, filters, name or status."""
        items = _parse_json(body)
        if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
            raise _rest_error(400, 10004, "Invalid message format")
        with self._lock:
            updates = []
            for item in items:
                subscription = self._unit_subscriptions().get(_ens_string(item, "subscriptionId"))
                if subscription is None:
                    raise _rest_error(404, 404, "Subscription ID doesn't exist")
                name = item.get("subscriptionName", subscription.name)
                types = item.get("eventCategoryTypes", subscription.event_types)
                filters = item.get("filters", subscription.filters)
                status = item.get("status", subscription.status)
                if not isinstance(name, str) or not name.strip():
                    raise _rest_error(400, 10005, "subscriptionName must be a non-empty string")
                if (
                    not isinstance(types, list)
                    or not types
                    or not all(isinstance(t, str) and _ENS_EVENT_TYPE.match(t) for t in types)
                ):
                    raise _rest_error(
                        400, 10005, "eventCategoryTypes must be NotificationEventCategory.NotificationEventType values"
                    )
                if not isinstance(filters, list) or not all(
                    isinstance(f, str) and _ENS_FILTER.match(f) for f in filters
                ):
                    raise _rest_error(400, 10005, "filters must be a list of name=value strings")
                if status not in ("active", "paused"):
                    raise _rest_error(400, 10005, "status must be active or paused")
                updates.append((subscription, name, list(dict.fromkeys(types)), list(filters), status))
            changed = False
            for subscription, name, types, filters, status in updates:
                changed |= (subscription.name, subscription.event_types, subscription.filters, subscription.status) != (
                    name,
                    types,
                    filters,
                    status,
                )
                subscription.name, subscription.event_types, subscription.filters = name, types, filters
                subscription.status = status
            if not changed:
                return Reply(304)  # "Update already exists on the server"
            return Reply(200, [self._subscription_view(update[0]) for update in updates])

    def _subscription_view(self, subscription: _EnsSubscription) -> dict[str, Any]:
        """The subscription as GET returns it; the caller holds the lock."""
        callback = self._ens_callbacks.get(subscription.callback_id)
        return {
            "callbackId": subscription.callback_id,
            "callbackName": callback.name if callback else "",
            "url": callback.url if callback else "",
            "maxBatchSize": callback.max_batch_size if callback else ENS_MAX_BATCH,
            "subscriptionId": subscription.subscription_id,
            "subscriptionName": subscription.name,
            "eventCategoryTypes": list(subscription.event_types),
            "filters": list(subscription.filters),
            "status": subscription.status,
            "statusReason": "none",
        }

    def _ens_subscription(self, match: re.Match[str]) -> _EnsSubscription:
        """The subscription named in the path; the caller holds the lock."""
        subscription = self._unit_subscriptions().get(unquote(match.group(1)))
        if subscription is None:
            raise _rest_error(404, 404, "Subscription ID doesn't exist")
        return subscription

    def _ens_get_subscription(self, match: re.Match[str]) -> Reply:
        with self._lock:
            return Reply(200, self._subscription_view(self._ens_subscription(match)))

    def _ens_delete_subscription(self, match: re.Match[str]) -> Reply:
        with self._lock:
            del self._ens_subscriptions[self._ens_subscription(match).subscription_id]
        return Reply(200)

    def _ens_subscriptions_by_callback(self, match: re.Match[str]) -> Reply:
        with self._lock:
            callback = self._ens_callback(match)
            return Reply(
                200,
                [
                    self._subscription_view(subscription)
                    for subscription in self._ens_subscriptions.values()
                    if subscription.callback_id == callback.callback_id
                ],
            )

    # -- control endpoints -------------------------------------------------------------------

    def _control_payload(self, body: bytes) -> dict[str, Any]:
        data = _parse_json(body) if body.strip() else {}
        if not isinstance(data, dict):
            raise _rest_error(400, 10004, "Invalid message format", "")
        return data

    def _control_error(self, message: str) -> ApiError:
        return _rest_error(400, 10005, message, "")

    def _system_control(self, method: str, sub_path: str, query: str, body: bytes) -> Reply:
        if sub_path.startswith("/rows/") and method == "GET":
            return Reply(200, self.rows(unquote(sub_path[len("/rows/") :])))
        if sub_path == "/tenant" and method == "GET":
            # What a hub must be configured with for this tenant that its APIs do not tell it
            # (`make run` reads it to set MC_ALL_SUBSCRIBERS_LIST_ID).
            return Reply(200, {"allSubscribersListId": ALL_SUBSCRIBERS_LIST_ID})
        if sub_path == "/ens/deliver" and method == "POST":
            data = self._control_payload(body)
            callback_id, signature_key, tamper = data.get("callbackId"), data.get("signatureKey"), data.get("tamper")
            key_encoding = data.get("keyEncoding", "base64")
            if callback_id is not None and not isinstance(callback_id, str):
                raise self._control_error("callbackId must be a string")
            if signature_key is not None and not isinstance(signature_key, str):
                raise self._control_error("signatureKey must be a string")
            if tamper is not None and not isinstance(tamper, bool):
                raise self._control_error("tamper must be true or false")
            try:
                statuses = self.deliver_ens(
                    data.get("events"),
                    callback_id=callback_id,
                    signature_key=signature_key,
                    tamper=bool(tamper),
                    key_encoding=key_encoding,
                )
            except ValueError as error:
                raise self._control_error(str(error)) from None
            return Reply(200, {"statuses": statuses})
        if sub_path == "/async-requests" and method == "GET":
            return Reply(200, self.async_requests())
        if sub_path == "/data-extensions" and method == "GET":
            return Reply(200, [_declaration_view(schema) for schema in self.data_extensions()])
        if sub_path == "/data-extensions" and method == "POST":
            try:
                self.declare(_declaration_from(self._control_payload(body)))
            except (TypeError, ValueError) as error:
                raise self._control_error(str(error)) from None
            return Reply(200, {"declared": True})
        if sub_path == "/subscribers" and method == "GET":
            mid = parse_qs(query).get("mid", [""])[-1]
            return Reply(200, self.subscribers(mid=mid))
        if sub_path == "/subscribers" and method == "POST":
            data = self._control_payload(body)
            key, email, status = data.get("subscriberKey"), data.get("emailAddress", ""), data.get("status", "Active")
            if not isinstance(key, str) or not key or not isinstance(email, str) or not isinstance(status, str):
                raise self._control_error("subscriberKey (a string), emailAddress and status are needed")
            modified, mid = data.get("modified"), data.get("mid", "")
            if not isinstance(mid, str):
                raise self._control_error("mid must be a string (a business unit's MID)")
            try:
                moment = datetime.fromisoformat(modified) if isinstance(modified, str) else None
                return Reply(200, self.put_subscriber(key, email, status, modified=moment, mid=mid))
            except ValueError as error:
                raise self._control_error(str(error)) from None
        if sub_path == "/contact-deletions" and method == "GET":
            return Reply(200, self.contact_deletions())
        finish = _CONTROL_FINISH_DELETE.match(sub_path)
        if finish and method == "POST":
            status = self._control_payload(body).get("status", "Completed")
            try:
                self.finish_contact_deletion(int(finish.group(1)), status if isinstance(status, str) else "")
            except ValueError as error:
                raise self._control_error(str(error)) from None
            return Reply(200, {"finished": True})
        if sub_path == "/ens/callbacks" and method == "GET":
            return Reply(200, self.callbacks())
        if sub_path == "/ens/subscriptions" and method == "GET":
            return Reply(200, self.subscriptions())
        raise _rest_error(404, 404, "Not Found", "")
