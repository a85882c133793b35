"""Strict JSON decoding for every JSON body the hub takes in.

Python's ``json`` accepts more than the hub can store or process: ``NaN`` and ``Infinity``
(not JSON at all), numbers like ``1e400`` (parsed as infinity), ``"\\ud800"`` escapes
(lone surrogates: a Python ``str``, but no Unicode string, so neither PostgreSQL nor UTF-8
can hold them), and nesting deep enough to raise ``RecursionError``. ``loads`` refuses
all of these with a ``StrictJsonError`` naming the path of the culprit (``"body"`` when
there is no better name), so a view answers 400 instead of failing later with a 500.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.parsers import BaseParser

# CIM Individuals nest five levels; ENS events and Journey Builder claims three or four.
MAX_DEPTH = 64

_SURROGATE = re.compile("[\ud800-\udfff]")
# A lone surrogate can only come from a \uD800-\uDFFF escape (strict UTF-8 has none).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class StrictJsonError(ValueError):
    """A body that is not strict JSON; ``field`` is the path of the culprit, or ``"body"``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class _NotANumber:
    """Stands in for NaN, Infinity or an overflowing number until the walk finds its path."""

    def __init__(self, text: str) -> None:
        self.text = text


def _path(parts: tuple[Any, ...]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _check(value: Any, max_depth: int) -> None:
    """Walk the parsed document (no recursion): depth, stand-ins and lone surrogates."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        item, parts = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise StrictJsonError(_path(parts), "holds a lone surrogate escape (\\ud800-\\udfff), not a character")
        elif isinstance(item, _NotANumber):
            raise StrictJsonError(_path(parts), f"{item.text[:40]} is not a finite JSON number")
        elif isinstance(item, dict | list):
            if len(parts) >= max_depth:
                raise StrictJsonError("body", f"nests deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    if _SURROGATE.search(key):
                        raise StrictJsonError(_path(parts), "has a key with a lone surrogate escape, not a character")
                    stack.append((child, (*parts, key)))
            else:
                stack.extend((child, (*parts, i)) for i, child in enumerate(item))


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse strict JSON (UTF-8 when bytes); raises StrictJsonError naming the culprit."""
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8-sig")  # a leading byte order mark is tolerated, as json does
        except UnicodeDecodeError as exc:
            raise StrictJsonError("body", f"is not UTF-8 (byte {exc.start})") from None
    else:
        text = data
    # A str may hold lone surrogates itself (bytes decoded strictly cannot).
    suspicious = not isinstance(data, bytes | bytearray | memoryview) and bool(_SURROGATE.search(text))

    def constant(name: str) -> _NotANumber:
        nonlocal suspicious
        suspicious = True
        return _NotANumber(name)

    def number(literal: str) -> float | _NotANumber:
        value = float(literal)
        if math.isfinite(value):
            return value
        return constant(literal)

    try:
        value = json.loads(text, parse_constant=constant, parse_float=number)
    except RecursionError:
        raise StrictJsonError("body", f"nests deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError, or an integer with too many digits
        where = f"line {exc.lineno} column {exc.colno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else exc
        raise StrictJsonError("body", f"is not valid JSON ({where})") from None
    # The walk costs a pass over the document: skip it when nothing it looks for can be there.
    if suspicious or _SURROGATE_ESCAPE.search(text) or text.count("[") + text.count("{") >= max_depth:
        _check(value, max_depth)
    return value


class StrictJSONParser(BaseParser):
    """DRF's JSON parser, strict: a refusal is a 400 problem naming the field."""

    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict[str, Any] | None = None) -> Any:
        try:
            return loads(stream.read() if stream is not None else b"")
        except StrictJsonError as exc:
            raise ValidationError({exc.field: [exc.message]}) from None
