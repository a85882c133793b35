"""CIM Individual -> the fields of a Salesforce Contact (or Person Account)."""

from __future__ import annotations

from typing import Any


def contact_fields(individual: dict[str, Any] | None) -> dict[str, Any]:
    """Name, email, mobile, birth date, mailing address and email opt-out; fields without a value are left out."""
    if individual is None:
        return {}
    points = individual.get("contactPoints") or []
    email = next((p["emailAddress"] for p in points if p["contactPointType"] == "ContactPointEmail"), None)
    phone = next((p["telephoneNumber"] for p in points if p["contactPointType"] == "ContactPointPhone"), None)
    address = next((p for p in points if p["contactPointType"] == "ContactPointAddress"), None)
    fields: dict[str, Any] = {
        "FirstName": individual.get("firstName"),
        "LastName": individual.get("lastName") or "(unknown)",  # required on Contact
        "Email": email,
        "MobilePhone": phone,
        "Birthdate": individual.get("birthDate"),
        "HasOptedOutOfEmail": individual.get("doNotMarketFromUpdateDate") is not None,
    }
    if address:
        fields.update(
            MailingStreet=address.get("addressLine1"),
            MailingCity=address.get("cityName"),
            MailingPostalCode=address.get("postalCodeText"),
            MailingState=address.get("stateProvinceName"),
            MailingCountry=address.get("countryName"),
        )
    return {k: v for k, v in fields.items() if v is not None}
