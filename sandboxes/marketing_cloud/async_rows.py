"""The asynchronous data-extension rows API of the sandbox: queued requests, status, per-row results.

What a tenant does, and where each fact comes from:

- ``PUT /data/v1/async/dataextensions/key:{key}/rows`` upserts, ``POST`` inserts; the body is
  ``{"items": [{column: value, ...}, ...]}``, each item one row with its primary key columns among
  the others (flat, no ``keys``/``values``); an accepted request is answered **202** with a
  ``requestId`` (Salesforce reference pages ``updateDataExtensionIDAsync`` and
  ``insertDataExtensionIDAsync``, developer.salesforce.com/docs/marketing/marketing-cloud/references/
  mc_rest_data_extensions/). A data extension that cannot be found is refused before anything is
  queued, with ``resultMessages`` (``resultCode`` ``CustomObjectNotFound``; the body quoted in
  segmentio/action-destinations ``salesforce-marketing-cloud/_tests_/asyncDataExtension.async.test.ts``).
  Every other problem is found while the request is processed and recorded per row in its results.
- ``GET /data/v1/async/{requestId}/status`` answers ``status.requestStatus`` (``Pending``,
  ``Executing``, ``Complete``, ``Error``: the reference page lists three, Segment's client also
  handles ``Executing``), ``status.resultStatus`` (``OK``, ``Has Errors``), ``hasErrors``,
  ``callDateTime``, ``pickupDateTime``, ``completionDateTime``; an unknown request ID is answered 200
  with ``resultMessages`` ``AsyncRequestStatusNotFound`` and no ``status`` (reference page
  ``getStatusDataExtensionAsync``). Public clients report that right after a submit the status record
  is sometimes not found yet (a production Python client's note, found by the string index):
  '``async_not_found_polls`` (sandbox config) makes the sandbox do that.
- ``GET /data/v1/async/{requestId}/results`` pages the per-row results, one item per submitted row
  in submission order, ``{"status": "OK", "message": "Upserted DataExtensionObject"}`` or
  ``{"status": "Error", "errorCode": 2, "message": ..., "errors": [{"name", "errorMessage",
  "errorCode"}]}``; ``page``, ``pageSize`` (default 50) and ``count`` (reference page
  ``getResultsDataExtensionAsync``; item shapes from Segment's tests above). SQL deadlocks come back
  under the same ``errorCode`` with a message ending "Rerun the transaction." and succeed when the
  row is sent again (Segment's ``index.async.ts`` retries exactly those):
  ``async_deadlock_rows`` injects them.

The documentation names no limit on a request's size. Segment's client sends at most 5 MB per
request (``batch_bytes`` default 5,000,000 in ``asyncDataExtension/fields.ts``); the sandbox refuses
more with 413 in Marketing Cloud's error shape (its own wording). How ``results`` takes its page
parameters is not documented either: the sandbox reads ``$page``/``$pageSize`` (as the row reads
do) and caps the page at ``async_max_results_page``; a client should follow the
``pageSize`` the answer names. Where no real message is known, the wording is the sandbox's own.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from integrations.marketing_cloud.schema import MC_SYSTEM_TIME
from sandboxes.http import ApiError, Reply
from sandboxes.marketing_cloud.data_extensions import SandboxDataExtension

__all__ = ["MAX_ASYNC_BODY_BYTES", "AsyncRequest", "AsyncRows"]

MAX_ASYNC_BODY_BYTES = 5_000_000
DEFAULT_RESULTS_PAGE = 50
DEADLOCK_MESSAGE = (
    "Transaction (Process ID 71) was deadlocked on lock resources with another process and has been "
    "chosen as the deadlock victim. Rerun the transaction."
)


@dataclass
class AsyncRequest:
    request_id: str
    de_key: str
    upsert: bool
    items: list[Any]
    called: dt.datetime
    received: float  # monotonic; it completes async_delay seconds later (the delay as configured then)
    not_found_left: int
    # Where its data extension is kept (the sandbox's key: MID and key in a child unit), and that
    # business unit ("" the parent): the rows land there, and only that unit's token reads the request.
    store_key: str = ""
    unit: str = ""
    picked_up: dt.datetime | None = None
    completed: dt.datetime | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def has_errors(self) -> bool:
        return any(item["status"] != "OK" for item in self.results)


def _mc_time(moment: dt.datetime) -> str:
    # Status dates come without an offset ("2017-10-27T16:00:38.98"); Marketing Cloud keeps system time.
    return moment.astimezone(MC_SYSTEM_TIME).replace(tzinfo=None).isoformat(timespec="milliseconds")


def _result_messages(code: str, message: str, result_type: str = "Operational") -> dict[str, Any]:
    return {
        "requestId": str(uuid.uuid4()),
        "resultMessages": [{"resultType": result_type, "resultClass": "Error", "resultCode": code, "message": message}],
    }


class AsyncRows:
    """Queued asynchronous requests of one sandbox; every method is called with the sandbox's lock held."""

    def __init__(self) -> None:
        self.requests: dict[str, AsyncRequest] = {}

    def reset(self) -> None:
        self.requests.clear()

    def submit(
        self,
        de: SandboxDataExtension | None,
        reference: str,
        body: bytes,
        *,
        upsert: bool,
        config: Any,
        des: dict[str, SandboxDataExtension],
        store_key: str = "",
        unit: str = "",
    ) -> Reply:
        if len(body) > MAX_ASYNC_BODY_BYTES:
            raise ApiError(
                413,
                {
                    "message": f"Request body exceeds {MAX_ASYNC_BODY_BYTES} bytes",
                    "errorcode": 10000,
                    "documentation": "",
                },
            )
        if de is None:
            raise ApiError(
                400,
                _result_messages(
                    "CustomObjectNotFound",
                    f"Failed to resolve the Custom Object from the provided ObjectReferenceIdentifier {reference}.",
                    "Validation",
                ),
            )
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ApiError(
                400, {"message": "Invalid message format", "errorcode": 10004, "documentation": ""}
            ) from None
        items = data.get("items") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items:
            raise ApiError(400, {"message": "Missing required field: items", "errorcode": 10002, "documentation": ""})
        if not all(isinstance(item, dict) for item in items):
            raise ApiError(400, {"message": "Invalid message format", "errorcode": 10004, "documentation": ""})
        now = dt.datetime.now(dt.UTC)
        request = AsyncRequest(
            request_id=str(uuid.uuid4()),
            de_key=de.schema.key.lower(),
            upsert=upsert,
            items=items,
            called=now,
            received=time.monotonic(),
            not_found_left=config.async_not_found_polls,
            store_key=store_key or de.schema.key.lower(),
            unit=unit,
        )
        self.requests[request.request_id] = request
        self.run_due(des, config)
        return Reply(202, {"requestId": request.request_id, "resultMessages": []})

    def run_due(self, des: dict[str, SandboxDataExtension], config: Any) -> None:
        """Process every request whose delay has passed, oldest first, as the tenant's queue does."""
        now = time.monotonic()
        for request in self.requests.values():
            if request.completed is None and request.received + config.async_delay <= now:
                self._process(request, des.get(request.store_key), config)

    def _process(self, request: AsyncRequest, de: SandboxDataExtension | None, config: Any) -> None:
        request.picked_up = dt.datetime.now(dt.UTC)
        request.results = [self._row(de, item, request.upsert, config) for item in request.items]
        request.items = []  # what was written is in the data extension now
        request.completed = dt.datetime.now(dt.UTC)

    def _row(self, de: SandboxDataExtension | None, item: dict[str, Any], upsert: bool, config: Any) -> dict[str, Any]:
        if de is None:  # deleted while the request waited
            return {"status": "Error", "errorCode": 2, "message": "The data extension no longer exists.", "errors": []}
        key_columns = {column.name.lower(): column for column in de.schema.primary_key}
        keys = {name: value for name, value in item.items() if name.lower() in key_columns}
        values = {name: value for name, value in item.items() if name.lower() not in key_columns}
        missing = [name for name in key_columns if not any(k.lower() == name for k in keys) or _empty(item, name)]
        if missing:
            return {
                "status": "Error",
                "errorCode": 2,
                "message": "Cannot locate the existing record. Required keys are missing.",
                "errors": [
                    {"name": name, "errorMessage": f"Column [{name}] does not allow null value.", "errorCode": 70001}
                    for name in missing
                ],
            }
        if config.async_deadlock_rows > 0:
            config.async_deadlock_rows -= 1  # a countdown: reset() restores the configured value
            return {"status": "Error", "errorCode": 2, "message": DEADLOCK_MESSAGE, "errors": []}
        try:
            pk, _, _ = de.checked_keys(keys)
            if not upsert and pk in de.rows:
                return {
                    "status": "Error",
                    "errorCode": "UnexpectedError",
                    "message": (
                        f"Violation of PRIMARY KEY constraint 'PK_{de.object_id}'. Cannot insert duplicate key in "
                        f"object '{de.schema.key}'. The duplicate key value is ({pk}).\r\nThe statement has been "
                        "terminated."
                    ),
                }
            de.upsert([(keys, values)])
        except ApiError as error:
            body = error.reply.body if isinstance(error.reply.body, dict) else {}
            causes = [str(e.get("message", "")) for e in body.get("additionalErrors") or [] if isinstance(e, dict)]
            causes = causes or [str(body.get("message", "Invalid value"))]
            return {
                "status": "Error",
                "errorCode": 2,
                "message": "Unable to save the row.",
                "errors": [
                    {"name": cause.split(":", 1)[0], "errorMessage": cause, "errorCode": 70002} for cause in causes
                ],
            }
        return {"status": "OK", "message": "Upserted DataExtensionObject" if upsert else "Inserted DataExtensionObject"}

    def _of_unit(self, request_id: str, unit: str) -> AsyncRequest | None:
        """The request, when the asking token's unit made it: another unit's request ID is unknown to it."""
        request = self.requests.get(request_id)
        return request if request is not None and request.unit == unit else None

    def status(self, request_id: str, unit: str = "") -> Reply:
        request = self._of_unit(request_id, unit)
        if request is not None and request.not_found_left > 0:
            request.not_found_left -= 1
            request = None
        if request is None:
            return Reply(
                200,
                _result_messages(
                    "AsyncRequestStatusNotFound",
                    f"Unable to locate an Async Request Status Record for the provided RequestId: {request_id}.",
                ),
            )
        done = request.completed is not None
        return Reply(
            200,
            {
                "status": {
                    "callDateTime": _mc_time(request.called),
                    "completionDateTime": _mc_time(request.completed) if request.completed else None,
                    "hasErrors": done and request.has_errors,
                    "pickupDateTime": _mc_time(request.picked_up) if request.picked_up else None,
                    "requestStatus": "Complete" if done else "Pending",
                    "resultStatus": ("Has Errors" if request.has_errors else "OK") if done else "",
                    "requestId": request.request_id,
                },
                "requestId": str(uuid.uuid4()),
                "resultMessages": [],
            },
        )

    def results(self, request_id: str, page: int, page_size: int | None, config: Any, unit: str = "") -> Reply:
        request = self._of_unit(request_id, unit)
        if request is None or request.completed is None:
            # Not picked up yet: there are no results to show (the reference page's error example).
            return Reply(
                200,
                _result_messages(
                    "AsyncRequestStatusNotFound",
                    f"Unable to locate an Async Request Status Record for the provided RequestId: {request_id}.",
                ),
            )
        size = min(page_size or DEFAULT_RESULTS_PAGE, config.async_max_results_page)
        start = (page - 1) * size
        return Reply(
            200,
            {
                "page": page,
                "pageSize": size,
                "count": len(request.results),
                "items": request.results[start : start + size],
                "requestId": request.request_id,
                "resultMessages": [],
            },
        )


def _empty(item: dict[str, Any], lowered: str) -> bool:
    value = next((v for k, v in item.items() if k.lower() == lowered), None)
    return value is None or (isinstance(value, str) and not value.strip())
