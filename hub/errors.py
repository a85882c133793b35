"""What may be stored or shown about an error (dead letters, sync runs, step logs)."""

from __future__ import annotations

import psycopg
from django.db import DatabaseError


def error_summary(error: BaseException) -> str:
    """The error's class and a message that is safe to keep.

    A database error's message is PostgreSQL's, and it quotes values (``invalid input syntax
    for type integer: "ada@example.com"``), the statement (``LINE 1: ...``) and the data
    (``CONTEXT: JSON data, line 1: ...``): only its class, SQLSTATE and the constraint, table
    and column it names are kept. Any other error keeps its message, the hub's own wording.
    """
    cause = error if isinstance(error, psycopg.Error) else error.__cause__
    if isinstance(error, DatabaseError | psycopg.Error):
        parts = [type(error).__name__]
        if isinstance(cause, psycopg.Error):
            if type(cause).__name__ != parts[0]:
                parts.append(f"({type(cause).__name__})")
            if cause.sqlstate:
                parts.append(f"SQLSTATE {cause.sqlstate}")
            names = {
                "constraint": cause.diag.constraint_name,
                "table": cause.diag.table_name,
                "column": cause.diag.column_name,
            }
            parts += [f"{what} {name}" for what, name in names.items() if name]
        return " ".join(parts)
    return f"{type(error).__name__}: {error}"
