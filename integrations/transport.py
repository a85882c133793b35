"""The base for talking to external systems: transient versus permanent failures."""

from __future__ import annotations

import random
from typing import Any


class TransportError(Exception):
    """A call to an external system failed.

    ``permanent`` errors (bad request, forbidden) will fail again unchanged and go
    straight to the dead-letter list; transient ones (throttling, 5xx, timeouts,
    resets) are retried later with backoff. ``retry_after`` is the server's own
    minimum wait in seconds, when it gave one. ``detail`` is the system's error body as it
    answered it (for Marketing Cloud ``message``, ``errorcode`` and any ``additionalErrors``),
    kept so a dead letter shows every cause the system named.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        http_status: int | None = None,
        error_code: str = "",
        retry_after: float | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.detail = detail
        self.message = message
        self.permanent = permanent
        self.http_status = http_status
        self.error_code = error_code
        self.retry_after = retry_after


def backoff_delay(attempt: int, *, base: float = 2.0, cap: float = 300.0, floor: float = 0.0) -> float:
    """Capped exponential backoff with full jitter, never shorter than ``floor``.

    attempt 1 -> up to 2 s, 2 -> up to 4 s, ... capped at ``cap``; ``floor`` is the
    server's Retry-After, which the delay must honour.
    """
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    return max(floor, random.uniform(0, ceiling))
