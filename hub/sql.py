"""Set-based SQL the apps share: many rows in one statement, ids reserved ahead, advisory locks.

Every helper sends one statement on Django's connection (so it runs in the caller's
transaction), whatever the number of rows: the rows travel as one array per column and
``unnest`` turns them back into rows on the server (PostgreSQL's way of writing ``INSERT
... VALUES`` and ``UPDATE ... FROM (VALUES ...)`` for any number of rows with a fixed
statement text).

The arrays go as binary parameters with server-side binding: Django's default cursor
binds on the client, quoting every array element into the SQL text (a regular
expression over each JSON document), which cost more than the statements themselves. The
statement still passes through Django's execute wrappers (query counting, instrumentation),
and database errors come out as Django's.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
import psycopg
from django.db import connection

# Column types as unnest reads them; JSON travels as text and is cast per row.
_ARRAY_TYPE = {"jsonb": "text"}


def _unnest(columns: Sequence[str], types: Sequence[str]) -> tuple[str, str]:
    """(the SELECT list with casts, the unnest call with its column aliases)."""
    arrays = ", ".join(f"%b::{_ARRAY_TYPE.get(t, t)}[]" for t in types)  # %b: a binary parameter
    select = ", ".join(
        f"v.{c}::jsonb AS {c}" if t == "jsonb" else f"v.{c}" for c, t in zip(columns, types, strict=True)
    )
    return select, f"unnest({arrays}) AS v({', '.join(columns)})"


def execute(sql: str, params: Sequence[Any] | Mapping[str, Any], *, fetch: bool = False) -> Any:
    """One statement, parameters bound on the server (``%b`` ones sent binary); rows if ``fetch``, else the count.

    Where Django logs statements (DEBUG, or a test's ``CaptureQueriesContext``), this one is
    logged too, with its text and time, though not its parameters.
    """
    connection.ensure_connection()

    def run(sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        started = time.monotonic()
        try:
            with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall() if fetch else cursor.rowcount
        finally:
            if connection.queries_logged:
                connection.queries_log.append({"sql": sql, "time": f"{time.monotonic() - started:.3f}"})

    executor = run
    for wrapper in reversed(connection.execute_wrappers):
        executor = functools.partial(wrapper, executor)
    return executor(sql, params, False, {"connection": connection, "cursor": None})


def _json_default(value: Any) -> Any:
    """What JSON has no type for, as text (dates and times orjson writes itself, as ISO 8601)."""
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


def json_text(value: Any) -> str:
    """``value`` as compact JSON text for a jsonb parameter.

    orjson writes it about ten times faster than the standard library (a backfill writes
    about 2 KB of JSON a row), and the same text for what the hub stores: ISO 8601 dates
    and times with their offset, microseconds only when there are some. A lone surrogate,
    which orjson refuses, goes through ``json`` as before (PostgreSQL refuses the escape,
    as a database error the engine handles).
    """
    try:
        return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"), default=_json_default)


def _columns_of(rows: Sequence[Sequence[Any]], types: Sequence[str]) -> list[list[Any]]:
    if not rows:
        return [[] for _ in types]
    arrays = [list(column) for column in zip(*rows, strict=True)]
    for i, kind in enumerate(types):
        if kind == "jsonb":
            arrays[i] = [None if value is None else json_text(value) for value in arrays[i]]
    return arrays


def insert_rows(
    table: str,
    columns: Sequence[str],
    types: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    on_conflict: str = "",
    returning: str = "",
) -> list[tuple[Any, ...]]:
    """``INSERT INTO table (columns) SELECT ... FROM unnest(...)``; the RETURNING rows, if asked."""
    if not rows:
        return []
    select, source = _unnest(columns, types)
    sql = f"INSERT INTO {table} ({', '.join(columns)}) SELECT {select} FROM {source}"
    if on_conflict:
        sql += f" ON CONFLICT {on_conflict}"
    if returning:
        sql += f" RETURNING {returning}"
    if returning:
        return list(execute(sql, _columns_of(rows, types), fetch=True))
    execute(sql, _columns_of(rows, types))
    return []


def update_rows(
    table: str,
    key: str,
    columns: Sequence[str],
    types: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    expressions: dict[str, str] | None = None,
) -> int:
    """``UPDATE table AS t SET c = s.c ... FROM (unnest(...)) AS s WHERE t.key = s.key``.

    ``columns``/``types``/``rows`` start with the key. A column named in ``expressions``
    is set to that SQL expression (over ``t``, the row as it is, and ``s``, the values
    passed) instead; a passed value that no table column has (an instruction such as
    "leave it") is read by expressions only: list it in ``expressions`` as None.
    """
    if not rows:
        return 0
    expressions = expressions or {}
    select, source = _unnest(columns, types)
    sets = [f"{c} = s.{c}" for c in columns[1:] if c not in expressions]
    sets += [f"{c} = {expression}" for c, expression in expressions.items() if expression is not None]
    sql = (
        f"UPDATE {table} AS t SET {', '.join(sets)} "
        f"FROM (SELECT {select} FROM {source}) AS s WHERE t.{key} = s.{columns[0]}"
    )
    return execute(sql, _columns_of(rows, types))


def delete_rows(table: str, columns: Sequence[str], types: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
    """Delete the rows whose ``columns`` equal one of ``rows`` (one statement)."""
    if not rows:
        return 0
    select, source = _unnest(columns, types)
    match = " AND ".join(f"t.{c} = s.{c}" for c in columns)
    sql = f"DELETE FROM {table} AS t USING (SELECT {select} FROM {source}) AS s WHERE {match}"
    return execute(sql, _columns_of(rows, types))


def reserve_ids(counts: dict[str, int]) -> dict[str, list[int]]:
    """The next ids of each table's sequence (``{table: n}``), all in one statement.

    Rows written with reserved ids can reference each other before any is inserted;
    an id reserved and not used leaves a gap, as a rolled-back insert does.
    """
    wanted = {table: n for table, n in counts.items() if n > 0}
    if not wanted:
        return {table: [] for table in counts}
    # The sequence is looked up once per table, not once per id (the lookup cost as much as nextval).
    parts = ", ".join(
        "(SELECT coalesce(array_agg(nextval(s.seq)), '{}') "
        "FROM (SELECT pg_get_serial_sequence(%s, 'id')::regclass AS seq) AS s, generate_series(1, %s))"
        for _ in wanted
    )
    params: list[Any] = []
    for table, n in wanted.items():
        params += [table, n]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {parts}", params)
        row = cursor.fetchone()
    reserved = {table: list(ids) for table, ids in zip(wanted, row, strict=True)}
    return {table: reserved.get(table, []) for table in counts}


def advisory_lock(names: Iterable[str]) -> list[str]:
    """Transaction-scoped advisory locks on ``names``, taken in one statement in the locks' own order.

    Each name is a 64-bit lock (its hash); every transaction takes its locks sorted by
    that number, so two transactions wanting overlapping sets never wait on each other
    in a cycle. Returns the names locked, sorted.
    """
    ordered = sorted(set(names))
    if ordered:
        # The names go as one binary array: a batch locks thousands, and Django's cursor would
        # quote each into the statement's text.
        execute(
            "SELECT count(*) FROM (SELECT pg_advisory_xact_lock(h) FROM ("
            "SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest(%b::text[]) AS k ORDER BY h"
            ") AS by_lock) AS taken",
            [ordered],
            fetch=True,
        )
    return ordered
