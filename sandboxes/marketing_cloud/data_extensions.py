"""Strict data extensions for the sandbox: declared fields, typed values, real error shapes.

A real data extension is created in Marketing Cloud with its fields before anything writes to it,
and it refuses a write that does not fit (shared reference §6): an unknown data extension key, an
unknown column, a value of the wrong type, one longer than the field allows, a missing required
field. A rowset with one bad row fails as a whole with 400, errorcode 10006 and each cause in
``additionalErrors``; the shape is the one a real tenant answered (a public GitHub client quoting a
real response: ``{"message": "Unable to save rows for data extension ID <id>", "errorcode": 10006,
"documentation": "", "additionalErrors": [{"message": "Email: The value for column [Email] is not a
valid email address. Parse error [InvalidEmailAddress]", "errorcode": 10000, "documentation":
""}]}``). A wrong primary key name is answered ``Primary key 'subscriberkey' does not exist.`` with
errorcode 10000, as on a real tenant (a public blog post quoting it). Where no real message is
known (unknown data extension, unknown column, too long, not a number...), the wording here is the
sandbox's own, in the same shape.

Values are stored as the tenant shows them in row reads: numbers as digits, booleans as
``True``/``False``, dates as ``6/23/2024 12:00:00 AM`` in Marketing Cloud system time.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from integrations.marketing_cloud.schema import (
    DataExtensionField,
    DataExtensionSchema,
    format_mc_datetime,
    parse_mc_datetime,
)
from sandboxes.http import ApiError

__all__ = ["SandboxDataExtension", "data_extension_error", "unknown_data_extension"]

DOCS_URL = "https://developer.salesforce.com/docs/atlas.en-us.mc-apis.meta/mc-apis/error-handling.htm"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ().\-]{2,}$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_INT32 = (-(2**31), 2**31 - 1)
_TRUE, _FALSE = {"true", "1", "yes", "y"}, {"false", "0", "no", "n"}


def data_extension_error(status: int, errorcode: int, message: str, additional: list[str] | None = None) -> ApiError:
    """An error as the data extension endpoints answer it (their ``documentation`` is empty)."""
    body: dict[str, Any] = {"message": message, "errorcode": errorcode, "documentation": ""}
    if additional is not None:
        body["additionalErrors"] = [{"message": text, "errorcode": 10000, "documentation": ""} for text in additional]
    return ApiError(status, body)


def unknown_data_extension(key: str) -> ApiError:
    # No real message for this case is on record; the status and errorcode follow the error-handling page.
    return data_extension_error(400, 10000, f"Data extension with external key '{key}' was not found.")


def invalid_data_type() -> ApiError:
    return ApiError(400, {"message": "Invalid data type", "errorcode": 10001, "documentation": DOCS_URL})


def _column_error(column: DataExtensionField, what: str) -> str:
    return f"{column.name}: The value for column [{column.name}] {what}"


def stored_value(column: DataExtensionField, value: Any) -> tuple[str, str | None]:
    """``value`` as the field stores it, and why the field refuses it (None when it does not).

    Raises the top-level 10001 for JSON that is no scalar at all (a list, an object).
    """
    if value is None:
        return "", None
    if isinstance(value, (list, dict)):
        raise invalid_data_type()
    kind = column.field_type
    if isinstance(value, bool):
        text = "True" if value else "False"
    elif isinstance(value, float) and value.is_integer() and kind == "Number":
        text = str(int(value))
    else:
        text = str(value)
    if kind in ("EmailAddress", "Phone", "Number", "Decimal", "Boolean", "Date"):
        text = text.strip()
    if text == "":
        return "", None
    if kind == "Number":
        if isinstance(value, bool) or not _INTEGER.match(text) or not _INT32[0] <= int(text) <= _INT32[1]:
            return text, _column_error(column, "is not a valid number.")
        text = str(int(text))
    elif kind == "Decimal":
        try:
            number = Decimal(text)
        except InvalidOperation:
            return text, _column_error(column, "is not a valid decimal.")
        if isinstance(value, bool) or not number.is_finite():
            return text, _column_error(column, "is not a valid decimal.")
        text = str(number)
    elif kind == "Boolean":
        if text.lower() not in _TRUE | _FALSE:
            return text, _column_error(column, "is not a valid boolean.")
        text = "True" if text.lower() in _TRUE else "False"
    elif kind == "Date":
        parsed = parse_mc_datetime(text)
        if parsed is None:
            return text, _column_error(column, "is not a valid date.")
        text = format_mc_datetime(parsed)
    elif kind == "EmailAddress" and not _EMAIL.match(text):
        return text, _column_error(column, "is not a valid email address. Parse error [InvalidEmailAddress]")
    elif kind == "Phone" and not _PHONE.match(text):
        return text, _column_error(column, "is not a valid phone number.")
    measured = kind not in ("Number", "Decimal", "Boolean", "Date")
    if measured and column.max_length is not None and len(text) > column.max_length:
        return text, _column_error(column, f"exceeds the maximum length of {column.max_length} characters.")
    return text, None


def comparable(column: DataExtensionField, text: str) -> tuple[int, Any]:
    """A sort and comparison key for a stored value or a filter literal of ``column``'s type.

    Empty values sort first; a value that does not parse as the field's type is None.
    """
    if text == "":
        return (0, "")
    kind = column.field_type
    if kind == "Date":
        parsed = parse_mc_datetime(text)
        return (1, parsed.astimezone(dt.UTC)) if parsed else (0, None)
    if kind in ("Number", "Decimal"):
        try:
            return (1, Decimal(text))
        except InvalidOperation:
            return (0, None)
    # SQL Server, behind data extensions, compares text case-insensitively by default (inferred).
    return (1, text.casefold())


@dataclass
class SandboxDataExtension:
    """One declared data extension and its rows, keyed by primary key values joined with "|"."""

    schema: DataExtensionSchema
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # Insertion-ordered, as reads page through rows in the order they were created.
    rows: dict[str, dict[str, str]] = field(default_factory=dict)

    def column(self, name: str) -> DataExtensionField | None:
        return self.schema.field_named(name)

    def checked_keys(self, keys: dict[str, Any]) -> tuple[str, dict[str, str], list[str]]:
        """The row's primary key, its key values by field name, and what is wrong with them.

        A key name that is no primary key field is refused outright, as Marketing Cloud does.
        """
        given = {name.lower(): (name, value) for name, value in keys.items()}
        key_fields = self.schema.primary_key
        for lowered, (name, _) in given.items():
            column = self.column(name)
            if column is None or not column.is_primary_key:
                raise data_extension_error(400, 10000, f"Primary key '{lowered}' does not exist.")
        problems: list[str] = []
        values: dict[str, str] = {}
        for column in key_fields:
            if column.name.lower() not in given:
                raise data_extension_error(400, 10000, f"Primary key '{column.name.lower()}' is missing.")
            raw = given[column.name.lower()][1]
            if raw is None:
                raise data_extension_error(400, 10005, "Invalid value")
            text, problem = stored_value(column, raw)
            if problem is None and text == "":
                problem = _column_error(column, "is required.")
            if problem:
                problems.append(problem)
            values[column.name] = text
        return "|".join(values[column.name] for column in key_fields), values, problems

    def checked_values(self, pk: str, values: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
        """The non-key values by field name, and what the data extension refuses in them."""
        problems: list[str] = []
        checked: dict[str, str] = {}
        for name, raw in values.items():
            if isinstance(raw, (list, dict)):
                raise invalid_data_type()
            column = self.column(name)
            if column is None:
                problems.append(f"{name}: The column [{name}] does not exist in the data extension.")
                continue
            text, problem = stored_value(column, raw)
            if problem:
                problems.append(problem)
                continue
            if column.is_primary_key:
                continue  # the keys decide the row; a key repeated among the values changes nothing
            if column.is_required and text == "":
                problems.append(_column_error(column, "is required."))
                continue
            checked[column.name] = text
        existing = self.rows.get(pk)
        given = {name.lower() for name in values}
        for column in self.schema.fields:
            missing = existing is None or not existing.get(column.name)
            if column.is_required and not column.is_primary_key and column.name.lower() not in given and missing:
                problems.append(_column_error(column, "is required."))
        return checked, problems

    def upsert(self, items: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[tuple[dict[str, str], dict[str, str]]]:
        """Check every row, then write them all, or none (Marketing Cloud fails the whole call).

        Returns each row's key values and its stored non-key values. The caller holds the lock.
        """
        checked = []
        problems: list[str] = []
        for keys, values in items:
            pk, key_values, key_problems = self.checked_keys(keys)
            row_values, value_problems = self.checked_values(pk, values)
            problems += key_problems + value_problems
            checked.append((pk, key_values, row_values))
        if problems:
            raise data_extension_error(
                400, 10006, f"Unable to save rows for data extension ID {self.object_id}", problems
            )
        written = []
        for pk, key_values, row_values in checked:
            row = self.rows.setdefault(pk, {})
            row.update(row_values)
            row.update(key_values)
            written.append((key_values, {k: v for k, v in row.items() if k not in key_values}))
        return written

    def read_item(self, pk: str) -> dict[str, dict[str, str]]:
        """A row as row reads show it: field names lower-cased, every field present ("" when empty)."""
        row = self.rows.get(pk, {})
        return {
            "keys": {c.name.lower(): row.get(c.name, "") for c in self.schema.fields if c.is_primary_key},
            "values": {c.name.lower(): row.get(c.name, "") for c in self.schema.fields if not c.is_primary_key},
        }

    def select(self, clauses: list[tuple[str, str, str]], order: list[tuple[str, bool]]) -> list[str]:
        """Primary keys of the rows matching every ``(column, op, literal)``, in ``order``."""
        typed: list[tuple[DataExtensionField, str, tuple[int, Any]]] = []
        for name, op, literal in clauses:
            column = self.column(name)
            if column is None:
                raise data_extension_error(400, 10005, f"Invalid value: unknown column '{name}' in $filter")
            key = comparable(column, literal.strip() if column.field_type != "Text" else literal)
            if key[1] is None:
                raise data_extension_error(400, 10005, f"Invalid value: '{literal}' for column '{name}' in $filter")
            typed.append((column, op, key))
        selected = [
            pk
            for pk, row in self.rows.items()
            if all(_matches(comparable(column, row.get(column.name, "")), op, key) for column, op, key in typed)
        ]
        # Sort by the last key first; the stable sort then yields the full multi-key order.
        for name, descending in reversed(order):
            column = self.column(name)
            if column is None:
                raise data_extension_error(400, 10005, f"Invalid value: unknown column '{name}' in $orderBy")
            selected.sort(
                key=lambda pk, c=column: _sortable(comparable(c, self.rows[pk].get(c.name, ""))), reverse=descending
            )
        return selected


def _sortable(key: tuple[int, Any]) -> tuple[int, Any]:
    # Unparseable stored values (none can be written, but be safe) sort with the empty ones.
    return (0, "") if key[1] is None else key


def _matches(actual: tuple[int, Any], op: str, expected: tuple[int, Any]) -> bool:
    if actual[0] == 0 or actual[1] is None:
        # An empty value equals nothing and is "not equal" to everything (SQL's NULL, roughly).
        return op == "ne"
    value, wanted = actual[1], expected[1]
    return {
        "eq": value == wanted,
        "ne": value != wanted,
        "gt": value > wanted,
        "ge": value >= wanted,
        "lt": value < wanted,
        "le": value <= wanted,
    }[op]
