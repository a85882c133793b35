"""Match profiles and blocking keys: what a record is compared on, and how candidates are found.

Pure functions, no database. A profile holds every value one side of a comparison has,
per attribute, as sent and normalised (a golden record has all its sources' values). A
blocking key is an indexed value (``customers_matchkey``) that an incoming record shares
with the golden records worth comparing it with: candidates come from the keys, never
from the table.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from customers.nicknames import canonical_first_name
from customers.normalize import country_code, fold, normalize_name, normalize_postal_code, provider_email, soundex

ATTRIBUTES = (
    "first_name",
    "last_name",
    "name_suffix",
    "birth_date",
    "email",
    "phone",
    "postal_code",
    "address",
    "gender",
)


class MatchProfile:
    """Every value one side of a comparison has, per attribute, as sent and normalised."""

    # A plain class with slots, not a dataclass: a unit of work builds one per candidate it reads
    # (``from_json``), thousands a batch, and the dataclass's three field factories, whose sets
    # ``from_json`` then replaced, were about a tenth of that.
    __slots__ = ("values", "_keys", "_raws")

    def __init__(self, values: dict[str, set[tuple[str, str]]] | None = None) -> None:
        self.values = values if values is not None else {name: set() for name in ATTRIBUTES}
        # The keys and raw values per attribute, computed once: comparisons ask for them again and again.
        self._keys: dict[str, set[str]] = {}
        self._raws: dict[str, set[str]] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MatchProfile) and self.values == other.values

    __hash__ = None  # type: ignore[assignment]  # mutable, as before

    def __repr__(self) -> str:
        return f"MatchProfile({self.to_json()!r})"

    def add(self, attribute: str, raw: Any, normalized: str | None = None) -> None:
        if raw in (None, ""):
            return
        text = raw.isoformat() if isinstance(raw, dt.date) else str(raw)
        key = normalized if normalized is not None else text
        if key:
            self.values[attribute].add((text, key))
            self._keys.pop(attribute, None)
            self._raws.pop(attribute, None)

    def keys(self, attribute: str) -> set[str]:
        if attribute not in self._keys:
            self._keys[attribute] = {key for _, key in self.values[attribute]}
        return self._keys[attribute]

    def raws(self, attribute: str) -> set[str]:
        if attribute not in self._raws:
            self._raws[attribute] = {raw for raw, _ in self.values[attribute]}
        return self._raws[attribute]

    def update(self, other: MatchProfile) -> None:
        for name in ATTRIBUTES:
            self.values[name] |= other.values[name]
        self._keys.clear()
        self._raws.clear()

    def to_json(self) -> dict[str, list[list[str]]]:
        """The profile as stored with a golden record (``Individual.match_profile``)."""
        return {name: sorted([raw, key] for raw, key in pairs) for name, pairs in self.values.items() if pairs}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MatchProfile:
        return cls(
            {name: {(str(raw), str(key)) for raw, key in data[name]} if name in data else set() for name in ATTRIBUTES}
        )


def add_person(
    profile: MatchProfile, *, first_name: str, last_name: str, birth_date: Any, gender: str, name_suffix: str = ""
) -> None:
    profile.add("first_name", first_name, normalize_name(first_name))
    profile.add("last_name", last_name, normalize_name(last_name))
    profile.add("name_suffix", name_suffix, normalize_name(name_suffix))
    profile.add("birth_date", birth_date)
    profile.add("gender", gender, fold(gender)[:1])


def add_address(profile: MatchProfile, *, line1: str, city: str, postal_code: str, country: str) -> None:
    postal = normalize_postal_code(postal_code, country)
    profile.add("postal_code", postal_code, postal)
    if line1:
        street = " ".join(fold(line1).replace(",", " ").replace(".", " ").split())
        profile.add("address", line1, f"{street}|{postal or fold(city)}|{country_code(country)}")


def profile_from_source(source: Any) -> MatchProfile:
    """The profile of a parsed CIM Individual (``customers.cim.SourceIndividual``)."""
    profile = MatchProfile()
    add_person(
        profile,
        first_name=source.first_name,
        last_name=source.last_name,
        birth_date=source.birth_date,
        gender=source.gender,
        name_suffix=source.name_suffix,
    )
    for email in source.emails:
        profile.add("email", email.email_address, email.value_key)
    for phone in source.phones:
        # The parsed phone's key is its E.164 form already (``customers.cim.phone_key``).
        profile.add("phone", phone.telephone_number, phone.value_key)
    for address in source.addresses:
        add_address(
            profile,
            line1=address.address_line1,
            city=address.city_name,
            postal_code=address.postal_code_text,
            country=address.country_name,
        )
    return profile


# Blocking key kinds, stored in customers_matchkey(kind, value) with an index: an incoming record
# is compared only with golden records sharing one of its keys.
KEY_EMAIL = "email"  # the mailbox by provider rules (covers the exact address too)
KEY_PHONE = "phone"  # E.164
KEY_NAME_DOB = "name_dob"  # Soundex of the surname + birth date
KEY_FIRST_DOB = "first_dob"  # nickname-canonical first name + birth date (a surname changed)
KEY_POSTAL_NAME = "postal_name"  # postal code + Soundex of the surname
KEY_POSTAL_FIRST = "postal_first"  # postal code + nickname-canonical first name (a surname typo or change)
BLOCKING_KEY_KINDS = (KEY_EMAIL, KEY_PHONE, KEY_NAME_DOB, KEY_FIRST_DOB, KEY_POSTAL_NAME, KEY_POSTAL_FIRST)
# The keys writers lock on (see customers.actions.lock_identity): every key through which an
# auto-merge rule can find its candidate, which with the default rules is all of them.
IDENTITY_KEY_KINDS = frozenset(BLOCKING_KEY_KINDS)


def blocking_keys(profile: MatchProfile) -> set[tuple[str, str]]:
    keys = {(KEY_EMAIL, provider_email(email)) for email in profile.keys("email")}
    keys.update((KEY_PHONE, phone) for phone in profile.keys("phone") if len(phone) >= 7)
    keys.update(_name_keys(profile, surnames=profile.keys("last_name"), first_names=profile.keys("first_name")))
    return {(kind, value[:200]) for kind, value in keys}


def _name_keys(profile: MatchProfile, *, surnames: set[str], first_names: set[str]) -> set[tuple[str, str]]:
    """The keys pairing the surnames' Soundex and the first names with the birth date and the postcode."""
    codes = {soundex(name) for name in surnames} - {""}
    firsts = {canonical_first_name(name) for name in first_names} - {""}
    keys: set[tuple[str, str]] = set()
    for birth_date in profile.keys("birth_date"):
        keys.update((KEY_NAME_DOB, f"{code}|{birth_date}") for code in codes)
        keys.update((KEY_FIRST_DOB, f"{first}|{birth_date}") for first in firsts)
    for postal in profile.keys("postal_code"):
        keys.update((KEY_POSTAL_NAME, f"{postal}|{code}") for code in codes)
        keys.update((KEY_POSTAL_FIRST, f"{postal}|{first}") for first in firsts)
    return keys


def crossed_keys(profile: MatchProfile) -> set[tuple[str, str]]:
    """The name keys the record would have with its given name and surname the other way round.

    Looked up, never stored: an incoming "Matthews Bradley" finds the golden record "Bradley
    Matthews" (same birth date or postcode) through its stored keys, where every stored key pairs
    a surname with surnames and a first name with first names. Whether the two are one person is
    the rules' and the weights' call; no stored key changes, so no key migration.
    """
    keys = _name_keys(profile, surnames=profile.keys("first_name"), first_names=profile.keys("last_name"))
    return {(kind, value[:200]) for kind, value in keys}


def lookup_keys(profile: MatchProfile) -> set[tuple[str, str]]:
    """The keys an incoming record's candidates are looked up by: its own and its crossed ones."""
    return blocking_keys(profile) | crossed_keys(profile)
