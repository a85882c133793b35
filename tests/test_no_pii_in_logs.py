"""Logs carry IDs only: drive the flows (good, bad, failing) and scan every record for personal data."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import subscriber
from tests.queue import run_queued

pytestmark = pytest.mark.django_db(transaction=True)

PERSONAL = [
    "ada.lovelace@example.com",
    "Lovelace",
    "Ada",
    "+44 20 7946 0018",
    "St James",
    "SW1Y",
    "1985-12-10",
    "grace@example.com",
    "Hopper",
]


def test_logs_hold_no_personal_data(journey, sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    journey.execute(subscriber())  # accepted
    journey.execute(subscriber(EmailAddress="not-an-email"))  # refused: 400
    sandbox.inject("400")
    journey.execute(subscriber(key="SK-2", email="grace@example.com", FirstName="Grace", LastName="Hopper"))
    sandbox.inject("500", count=2)
    run_queued()  # write-backs: one dead-lettered, one retried
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert caplog.records, "the flows logged nothing: the scan would prove nothing"
    for value in PERSONAL:
        assert value not in text, f"personal data in logs: {value!r}"
