"""Given name and surname swapped: the incoming record finds the golden record by its crossed keys."""

from __future__ import annotations

import pytest

from customers.cim import parse_individual
from customers.resolution.engine import SourceChange, resolve

pytestmark = pytest.mark.django_db


def individual(record_id: str, first: str, last: str) -> dict:
    return {
        "id": record_id,
        "partyType": "Individual",
        "firstName": first,
        "lastName": last,
        "birthDate": "1961-04-09",
        "contactPoints": [
            {
                "contactPointType": "ContactPointAddress",
                "addressLine1": "12 Kemp Street",
                "cityName": "Toowoomba",
                "postalCodeText": "4350",
                "countryName": "AU",
            }
        ],
    }


def change(record_id: str, first: str, last: str) -> SourceChange:
    return SourceChange(
        system="CRM", external_id=record_id, source=parse_individual(individual(record_id, first, last)), actor="t"
    )


def test_a_record_with_its_names_swapped_is_compared_with_the_golden_record():
    (first,) = resolve([change("a", "Bradley", "Matthews")], render_snapshots=False)
    (swapped,) = resolve([change("b", "Matthews", "Bradley")], render_snapshots=False)
    # Every stored key pairs a surname with surnames, a first name with first names: without the
    # crossed look-up the two share none and are never compared.
    assert swapped.compared == 1
    # The rules want the first names alike: compared, not merged (a steward or a model's weight decides).
    assert swapped.rule in ("none", "")
