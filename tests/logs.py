"""Reading what the hub's configured log handler writes."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def captured_console() -> Iterator[io.StringIO]:
    """The output of the console handler that hub.settings.LOGGING configures, as it would reach stderr."""
    [handler] = [h for h in logging.getLogger().handlers if h.name == "console"]
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    try:
        yield buffer
    finally:
        handler.setStream(previous)
