"""One log record is one line: no logged value, from any logger, can start a line of its own."""

from __future__ import annotations

import logging

from tests.logs import captured_console

FORGED = "2026-12-01 12:00:00,000 INFO hub forged record"


def test_control_characters_in_any_message_are_escaped():
    with captured_console() as output:
        logger = logging.getLogger("tests.anything")
        logger.warning("argument %s", f"one\n{FORGED}")
        logger.warning(f"f-string\r\n{FORGED}\tTAB\x00NUL\x1bESC\x7fDEL\x85NEL\u2028LS")
    lines = output.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(f"WARNING tests.anything argument one\\n{FORGED}")
    assert lines[1].endswith(f"f-string\\r\\n{FORGED}\\tTAB\\x00NUL\\x1bESC\\x7fDEL\\x85NEL\\u2028LS")
    assert not any(line.startswith(FORGED) for line in lines)


def test_traceback_lines_are_indented_under_their_record():
    with captured_console() as output:
        try:
            raise ValueError(f"bad value\n{FORGED}\r{FORGED}")
        except ValueError:
            logging.getLogger("tests.anything").exception("failed on %s", "input")
    lines = output.getvalue().splitlines()
    assert lines[0].endswith("ERROR tests.anything failed on input")
    assert lines[1] == "    | Traceback (most recent call last):"
    assert all(line.startswith("    | ") for line in lines[1:])
    assert lines[-2:] == ["    | ValueError: bad value", f"    | {FORGED}\\r{FORGED}"]
