"""Named fault points for the reliability tests: a worker stops here so a test can kill it.

Off unless ``HUB_FAULT_POINT=name[:seconds]`` is set (tests only). The first process
to reach the named point writes its PID to ``HUB_FAULT_MARKER`` and sleeps; later
arrivals (the rerun after the kill) pass straight through, since the marker exists.
"""

from __future__ import annotations

import os
import time


def armed(name: str) -> bool:
    """True when a test asked to stop at ``name`` (``HUB_FAULT_POINT``)."""
    return os.environ.get("HUB_FAULT_POINT", "").partition(":")[0] == name


def fault_point(name: str) -> None:
    spec = os.environ.get("HUB_FAULT_POINT")
    if not spec:
        return
    point, _, seconds = spec.partition(":")
    marker = os.environ.get("HUB_FAULT_MARKER")
    if point != name or not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    time.sleep(float(seconds or 60))
