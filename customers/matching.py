"""Matching: normalised profiles, blocking keys and rules a steward can read.

Pure functions, no database: ``customers.resolution`` feeds them the incoming
record and the candidates its blocking keys found, and stores what they decide.

A rule is a list of criteria that must all hold (as in Salesforce Data Cloud's
match rules and Reltio's match groups) and an outcome: ``auto_merge`` or
``suspect``. Every attribute is compared with every method, so a decision can
always show the whole per-attribute comparison, not only the criteria that fired.
Multi-valued attributes (a golden record has all its sources' values) are
compared every value against every value and the best agreement counts.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import phonenumbers
from django.conf import settings

from customers.nicknames import canonical_first_name, name_groups

# ---------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------
# Mailbox providers whose addresses ignore a "+tag" (sub-addressing) or dots in the local part.
# Applied only by the ``provider`` email method, never to the stored value.
PLUS_TAG_PROVIDERS = frozenset(
    {"gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "icloud.com", "me.com", "fastmail.com"}
)
DOTLESS_PROVIDERS = frozenset({"gmail.com", "googlemail.com"})
PROVIDER_ALIASES = {"googlemail.com": "gmail.com"}

COUNTRY_CODES = {
    "united states": "US",
    "united states of america": "US",
    "usa": "US",
    "us": "US",
    "america": "US",
    "united kingdom": "GB",
    "uk": "GB",
    "great britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "gb": "GB",
    "canada": "CA",
    "germany": "DE",
    "deutschland": "DE",
    "france": "FR",
    "spain": "ES",
    "espana": "ES",
    "italy": "IT",
    "italia": "IT",
    "netherlands": "NL",
    "the netherlands": "NL",
    "ireland": "IE",
    "australia": "AU",
    "mexico": "MX",
    "brazil": "BR",
    "brasil": "BR",
    "japan": "JP",
    "india": "IN",
}


def fold(text: str) -> str:
    """NFKC, case-folded, accents stripped, whitespace collapsed: 'ZOË  Müller' -> 'zoe muller'."""
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.split())


def normalize_name(text: str) -> str:
    """A name for comparing: folded, letters and inner spaces only ("O'Brien-Smith" -> "obriensmith")."""
    return "".join(ch for ch in fold(text) if ch.isalpha())


@lru_cache(maxsize=65536)
def provider_email(email: str) -> str:
    """The mailbox an address delivers to, by its provider's rules (Gmail ignores dots and +tags)."""
    local, _, domain = email.lower().rpartition("@")
    domain = PROVIDER_ALIASES.get(domain, domain)
    if domain in PLUS_TAG_PROVIDERS:
        local = local.split("+", 1)[0]
    if domain in DOTLESS_PROVIDERS:
        local = local.replace(".", "")
    return f"{local}@{domain}"


def default_phone_region() -> str:
    return getattr(settings, "HUB_DEFAULT_PHONE_REGION", "US")


def e164(phone: str, region: str | None = None) -> str:
    """E.164 (`+14155550123`) when the number parses as possible; else its digits, '+' kept."""
    try:
        parsed = phonenumbers.parse(phone, region or default_phone_region())
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is not None and phonenumbers.is_possible_number(parsed):
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return "".join(ch for ch in phone if ch.isdigit() or ch == "+")


def country_code(name: str) -> str:
    """ISO 3166 alpha-2 for a country name or code ('United Kingdom' -> 'GB'); folded text otherwise."""
    folded = fold(name).replace(".", "")
    if len(folded) == 2 and folded.isalpha():
        return COUNTRY_CODES.get(folded, folded.upper())
    return COUNTRY_CODES.get(folded, folded)


def normalize_postal_code(code: str, country: str = "") -> str:
    """Upper case, no spaces or dashes; US ZIP+4 cut to the five-digit ZIP."""
    compact = "".join(ch for ch in fold(code).upper() if ch.isalnum())
    if country_code(country) in ("US", "") and len(compact) == 9 and compact.isdigit():
        compact = compact[:5]
    return compact


@lru_cache(maxsize=65536)
def soundex(name: str) -> str:
    """American Soundex of a normalised name ('robert' and 'rupert' -> 'R163'); '' for no letters."""
    letters = [ch for ch in normalize_name(name) if "a" <= ch <= "z"]
    if not letters:
        return ""
    codes = {**dict.fromkeys("bfpv", "1"), **dict.fromkeys("cgjkqsxz", "2"), **dict.fromkeys("dt", "3")}
    codes.update({"l": "4", "m": "5", "n": "5", "r": "6"})
    result = [letters[0].upper()]
    previous = codes.get(letters[0], "")
    for ch in letters[1:]:
        code = codes.get(ch, "")
        if code and code != previous:
            result.append(code)
        if ch not in "hw":  # h and w do not separate two letters with the same code
            previous = code
    return ("".join(result) + "000")[:4]


@lru_cache(maxsize=262144)
def jaro_winkler(a: str, b: str) -> float:
    """Jaro-Winkler similarity in [0, 1] (prefix scale 0.1, up to four characters)."""
    if a == b:
        return 1.0 if a else 0.0
    if not a or not b:
        return 0.0
    window = max(len(a), len(b)) // 2 - 1
    a_hit = [False] * len(a)
    b_hit = [False] * len(b)
    matches = 0
    for i, ch in enumerate(a):
        for j in range(max(0, i - window), min(len(b), i + window + 1)):
            if not b_hit[j] and b[j] == ch:
                a_hit[i] = b_hit[j] = True
                matches += 1
                break
    if not matches:
        return 0.0
    a_seq = [ch for ch, hit in zip(a, a_hit, strict=True) if hit]
    b_seq = [ch for ch, hit in zip(b, b_hit, strict=True) if hit]
    transpositions = sum(x != y for x, y in zip(a_seq, b_seq, strict=True)) / 2
    jaro = (matches / len(a) + matches / len(b) + (matches - transpositions) / matches) / 3
    prefix = 0
    for x, y in zip(a[:4], b[:4], strict=False):
        if x != y:
            break
        prefix += 1
    return jaro + prefix * 0.1 * (1 - jaro)


# ---------------------------------------------------------------------------
# Profiles and blocking keys
# ---------------------------------------------------------------------------
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


@dataclass
class MatchProfile:
    """Every value one side of a comparison has, per attribute, as sent and normalised."""

    values: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: {name: set() for name in ATTRIBUTES})

    def add(self, attribute: str, raw: Any, normalized: str | None = None) -> None:
        if raw in (None, ""):
            return
        text = raw.isoformat() if isinstance(raw, dt.date) else str(raw)
        key = normalized if normalized is not None else text
        if key:
            self.values[attribute].add((text, key))

    def keys(self, attribute: str) -> set[str]:
        return {key for _, key in self.values[attribute]}

    def raws(self, attribute: str) -> set[str]:
        return {raw for raw, _ in self.values[attribute]}

    def update(self, other: MatchProfile) -> None:
        for name in ATTRIBUTES:
            self.values[name] |= other.values[name]


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


def names_agree(first_a: str, last_a: str, first_b: str, last_b: str) -> bool:
    """First names (nicknames, typos) and surnames (typos) agree, a missing one agreeing with any."""
    profile_a, profile_b = MatchProfile(), MatchProfile()
    add_person(profile_a, first_name=first_a, last_name=last_a, birth_date=None, gender="")
    add_person(profile_b, first_name=first_b, last_name=last_b, birth_date=None, gender="")
    first = compare_attribute("first_name", profile_a, profile_b)
    last = compare_attribute("last_name", profile_a, profile_b)
    return Criterion("first_name", "nickname", 0.9, True).holds(first) and Criterion(
        "last_name", "fuzzy", 0.9, True
    ).holds(last)


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
        profile.add("phone", phone.telephone_number, e164(phone.telephone_number))
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
BLOCKING_KEY_KINDS = (KEY_EMAIL, KEY_PHONE, KEY_NAME_DOB, KEY_FIRST_DOB, KEY_POSTAL_NAME)
# The keys writers lock on (see customers.actions.lock_identity): every key through which an
# auto-merge rule can find its candidate, which with the default rules is all of them.
IDENTITY_KEY_KINDS = frozenset(BLOCKING_KEY_KINDS)


def blocking_keys(profile: MatchProfile) -> set[tuple[str, str]]:
    keys: set[tuple[str, str]] = set()
    keys.update((KEY_EMAIL, provider_email(email)) for email in profile.keys("email"))
    keys.update((KEY_PHONE, phone) for phone in profile.keys("phone") if len(phone) >= 7)
    surnames = {soundex(name) for name in profile.keys("last_name")} - {""}
    firsts = {canonical_first_name(name) for name in profile.keys("first_name")} - {""}
    for birth_date in profile.keys("birth_date"):
        keys.update((KEY_NAME_DOB, f"{code}|{birth_date}") for code in surnames)
        keys.update((KEY_FIRST_DOB, f"{first}|{birth_date}") for first in firsts)
    for postal in profile.keys("postal_code"):
        keys.update((KEY_POSTAL_NAME, f"{postal}|{code}") for code in surnames)
    return {(kind, value[:200]) for kind, value in keys}


# ---------------------------------------------------------------------------
# Comparison and rules
# ---------------------------------------------------------------------------
METHODS = ("exact", "normalized", "provider", "fuzzy", "phonetic", "nickname")
OUTCOME_AUTO = "auto_merge"
OUTCOME_SUSPECT = "suspect"
OUTCOME_NONE = "no_match"
# Methods that make sense per attribute (a steward's rule naming another combination is refused).
METHODS_BY_ATTRIBUTE = {
    "first_name": ("exact", "normalized", "fuzzy", "phonetic", "nickname"),
    "last_name": ("exact", "normalized", "fuzzy", "phonetic"),
    "name_suffix": ("normalized",),
    "birth_date": ("exact",),
    "email": ("exact", "normalized", "provider", "fuzzy"),
    "phone": ("exact", "normalized"),
    "postal_code": ("exact", "normalized"),
    "address": ("normalized", "fuzzy"),
    "gender": ("normalized",),
}


@dataclass
class AttributeComparison:
    """How one attribute of two profiles compares, by every method at once."""

    blank: bool  # one side (or both) has no value
    exact: bool = False
    normalized: bool = False
    provider: bool = False
    phonetic: bool = False
    nickname: bool = False
    similarity: float = 0.0  # best Jaro-Winkler over all value pairs (normalised)
    incoming: list[str] = field(default_factory=list)
    candidate: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.blank:
            return "blank"
        for name in ("exact", "normalized", "provider", "nickname", "phonetic"):
            if getattr(self, name):
                return name
        return "different"

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "similarity": round(self.similarity, 3),
            "incoming": self.incoming,
            "candidate": self.candidate,
        }


def compare_attribute(name: str, left: MatchProfile, right: MatchProfile) -> AttributeComparison:
    lkeys, rkeys = left.keys(name), right.keys(name)
    result = AttributeComparison(
        blank=not lkeys or not rkeys, incoming=sorted(left.raws(name))[:5], candidate=sorted(right.raws(name))[:5]
    )
    if result.blank:
        return result
    result.exact = bool({r.strip() for r in left.raws(name)} & {r.strip() for r in right.raws(name)})
    result.normalized = bool(lkeys & rkeys)
    if name == "email":
        result.provider = bool({provider_email(e) for e in lkeys} & {provider_email(e) for e in rkeys})
    if name in ("first_name", "last_name"):
        result.phonetic = bool(({soundex(v) for v in lkeys} & {soundex(v) for v in rkeys}) - {""})
    if name == "first_name":
        lgroups = set().union(*(name_groups(v) for v in lkeys))
        rgroups = set().union(*(name_groups(v) for v in rkeys))
        result.nickname = bool(lgroups & rgroups)
    if result.normalized:
        result.similarity = 1.0
    elif name in FUZZY_ATTRIBUTES:
        result.similarity = max(jaro_winkler(a, b) for a in lkeys for b in rkeys)
    return result


# Attributes whose similarity is worth a Jaro-Winkler (a phone or a date is equal or not).
FUZZY_ATTRIBUTES = frozenset({"first_name", "last_name", "email", "address"})


@dataclass(frozen=True)
class Criterion:
    attribute: str
    method: str
    threshold: float = 0.0
    blank_matches: bool = False

    def holds(self, comparison: AttributeComparison) -> bool:
        if comparison.blank:
            return self.blank_matches
        if self.method == "exact":
            return comparison.exact
        if self.method == "normalized":
            return comparison.normalized
        if self.method == "provider":
            return comparison.provider or comparison.normalized
        if self.method == "phonetic":
            return comparison.phonetic or comparison.normalized
        if self.method == "nickname":
            return comparison.nickname or comparison.normalized or comparison.similarity >= (self.threshold or 1.01)
        if self.method == "fuzzy":
            return comparison.normalized or comparison.similarity >= self.threshold
        return False

    def describe(self) -> str:
        text = f"{self.attribute} {self.method}"
        if self.method in ("fuzzy", "nickname") and self.threshold:
            text += f" >= {self.threshold:g}"
        return text + (" (or blank)" if self.blank_matches else "")


@dataclass(frozen=True)
class RuleSpec:
    """A match rule as the matcher sees it (``customers.models.MatchRule`` rows become these)."""

    name: str
    outcome: str
    criteria: tuple[Criterion, ...]
    rule_id: int | None = None

    def holds(self, comparisons: dict[str, AttributeComparison]) -> bool:
        # A rule needs at least one criterion that really agreed: blanks alone prove nothing.
        agreed = [c for c in self.criteria if not comparisons[c.attribute].blank and c.holds(comparisons[c.attribute])]
        return bool(agreed) and all(c.holds(comparisons[c.attribute]) for c in self.criteria)

    def score(self, comparisons: dict[str, AttributeComparison]) -> float:
        parts = [1.0 if comparisons[c.attribute].blank else comparisons[c.attribute].similarity for c in self.criteria]
        return sum(parts) / len(parts) if parts else 0.0


def parse_criteria(data: Any) -> tuple[Criterion, ...]:
    """Criteria from their JSON form; ValueError naming the culprit when one is not valid."""
    if not isinstance(data, list) or not data:
        raise ValueError("criteria must be a non-empty list")
    result = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise ValueError(f"criteria[{i}] must be an object")
        attribute, method = item.get("attribute"), item.get("method")
        if attribute not in METHODS_BY_ATTRIBUTE:
            raise ValueError(f"criteria[{i}].attribute must be one of {', '.join(METHODS_BY_ATTRIBUTE)}")
        if method not in METHODS_BY_ATTRIBUTE[attribute]:
            raise ValueError(
                f"criteria[{i}].method for {attribute} must be one of {', '.join(METHODS_BY_ATTRIBUTE[attribute])}"
            )
        threshold = item.get("threshold", 0.0)
        if not isinstance(threshold, int | float) or isinstance(threshold, bool) or not 0 <= threshold <= 1:
            raise ValueError(f"criteria[{i}].threshold must be a number between 0 and 1")
        if method == "fuzzy" and not threshold:
            raise ValueError(f"criteria[{i}].threshold is required for a fuzzy comparison")
        unknown = set(item) - {"attribute", "method", "threshold", "blank_matches"}
        if unknown:
            raise ValueError(f"criteria[{i}] has unknown keys: {', '.join(sorted(unknown))}")
        result.append(Criterion(attribute, method, float(threshold), bool(item.get("blank_matches", False))))
    return tuple(result)


@dataclass
class Decision:
    """What the rules decided about one pair, with the reasons."""

    outcome: str
    rule: str
    rule_id: int | None
    score: float
    comparisons: dict[str, AttributeComparison]

    def explanation(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "rule": self.rule,
            "ruleId": self.rule_id,
            "score": round(self.score, 3),
            "attributes": {name: c.as_dict() for name, c in self.comparisons.items()},
        }


def decide(rules: Iterable[RuleSpec], incoming: MatchProfile, candidate: MatchProfile) -> Decision:
    """The first auto-merge rule that holds wins; else the first suspect rule; else no match."""
    comparisons = {name: compare_attribute(name, incoming, candidate) for name in ATTRIBUTES}
    rules = list(rules)
    for outcome in (OUTCOME_AUTO, OUTCOME_SUSPECT):
        for rule in rules:
            if rule.outcome == outcome and rule.holds(comparisons):
                return Decision(outcome, rule.name, rule.rule_id, rule.score(comparisons), comparisons)
    return Decision(OUTCOME_NONE, "", None, 0.0, comparisons)


def rank(decisions: Iterable[tuple[int, Decision]]) -> list[tuple[int, Decision]]:
    """Candidates best first: auto before suspect, higher score, then the older golden record."""
    order = {OUTCOME_AUTO: 0, OUTCOME_SUSPECT: 1, OUTCOME_NONE: 2}
    return sorted(decisions, key=lambda item: (order[item[1].outcome], -item[1].score, item[0]))
