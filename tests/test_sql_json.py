"""hub.sql's JSON for jsonb parameters: orjson's text means what the standard library's did (real PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from decimal import Decimal

import pytest
from django.db import connection

from hub.sql import _json_default, insert_rows, json_text

CHICAGO = zoneinfo.ZoneInfo("America/Chicago")

VALUES = [
    {"at": dt.datetime(2026, 11, 22, 9, 13, tzinfo=dt.UTC), "rule": "most recent", "crossReferenceId": 1},
    {"naive": dt.datetime(2020, 1, 2, 3, 4, 5), "micro": dt.datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=CHICAGO)},
    {"date": dt.date(1964, 5, 21), "amount": Decimal("12.50"), "none": None, "flag": True, "n": 2**40},
    {1: "an int key", "nested": [{"name": "Zoë", "emoji": "\U0001f600"}, [], {}], "score": 0.875},
    ["a list", 1.5, -3, 'quote " and backslash \\ and \u2028'],
]


def standard(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), default=_json_default)


@pytest.mark.parametrize("value", VALUES)
def test_the_text_reads_as_the_standard_librarys(value: object) -> None:
    assert json.loads(json_text(value)) == json.loads(standard(value))


def test_dates_and_times_are_written_as_isoformat_writes_them() -> None:
    # Stored JSON is compared as text by people and by jsonb equality: a time must keep its form.
    for moment in (VALUES[0]["at"], VALUES[1]["naive"], VALUES[1]["micro"], VALUES[2]["date"]):
        assert json_text(moment) == f'"{moment.isoformat()}"'


def test_a_lone_surrogate_goes_through_the_standard_library() -> None:
    value = {"name": "bad \ud800 text"}
    assert json_text(value) == standard(value)


@pytest.mark.django_db
def test_jsonb_round_trip_through_postgresql() -> None:
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE json_probe (n int, doc jsonb)")
    insert_rows("json_probe", ("n", "doc"), ("integer", "jsonb"), [(i, v) for i, v in enumerate(VALUES)] + [(99, None)])
    with connection.cursor() as cursor:
        cursor.execute("SELECT n, doc FROM json_probe ORDER BY n")
        # Django's connection hands jsonb over as text (its JSONField decodes it).
        stored = {n: None if doc is None else json.loads(doc) for n, doc in cursor.fetchall()}
    assert stored.pop(99) is None
    assert stored == {i: json.loads(standard(v)) for i, v in enumerate(VALUES)}
