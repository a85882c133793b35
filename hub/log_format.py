"""The log formatter: one log record is one line, whatever the values logged in it contain.

A value that reaches a log message from outside (a callback ID in a request body, a path, an
exception's text) could carry a newline and so start a line that looks like a record of its own:
a forged log line. :class:`SingleLineFormatter` escapes control characters in the whole rendered
record line, so it does not matter whether the value came in as a ``%s`` argument, an f-string or
an ``extra`` field. Tracebacks and stack dumps, which are several lines by design, have every line
indented under the record instead, so no line in them can pass for a record either.
"""

from __future__ import annotations

import logging
from typing import Any

from pythonjsonlogger.json import JsonFormatter

# C0 controls, DEL and C1 controls, plus the two Unicode separators that line-oriented log tools
# (and str.splitlines) treat as line breaks.
_CONTROL_CODE_POINTS = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPES = {
    code: _NAMED.get(chr(code), f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}") for code in _CONTROL_CODE_POINTS
}
CONTINUATION_PREFIX = "    | "


def escape_control_characters(text: str) -> str:
    """``text`` with every control character written as a visible escape (a newline as ``\\n``)."""
    return text.translate(_ESCAPES)


def _indented(block: str) -> str:
    """Every line of a multi-line block behind the continuation prefix, control characters escaped."""
    return "\n".join(CONTINUATION_PREFIX + escape_control_characters(line) for line in block.split("\n"))


class SingleLineFormatter(logging.Formatter):
    """A ``logging.Formatter`` whose record line never contains a control character.

    Configured for the console handler in ``hub.settings.LOGGING``. Exception and stack text
    follow on their own lines, each behind :data:`CONTINUATION_PREFIX`.
    """

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        lines = [escape_control_characters(self.formatMessage(record))]
        if record.exc_info and not record.exc_text:
            # Cached unindented, as logging.Formatter does, for any other handler of the record.
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            lines.append(_indented(record.exc_text))
        if record.stack_info:
            lines.append(_indented(self.formatStack(record.stack_info)))
        return "\n".join(lines)


class HubJsonFormatter(JsonFormatter):
    """One JSON object per record (``HUB_LOG_FORMAT=json``): timestamp, level, logger, message, IDs.

    Only the fields named here are written. python-json-logger would add every ``extra`` attribute
    of a record, and some libraries put objects there whose text carries personal data (Django's
    request loggers attach the request, whose text has the query string: ``?email=``); the message
    itself is what the text format prints. JSON escapes control characters, so a record is one line
    here too (a traceback is one string field).
    """

    FIELDS = ("timestamp", "level", "logger", "message", "event_id", "sync_run_id", "exc_info", "stack_info")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", "%(levelname)s %(name)s %(message)s")
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        kwargs.setdefault("timestamp", True)
        super().__init__(*args, **kwargs)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        kept = {name: log_data.get(name) for name in self.FIELDS[:6]}
        kept.update({name: log_data[name] for name in self.FIELDS[6:] if log_data.get(name)})
        return kept
