"""Every normalisation the hub matches and stores by: email, phone (E.164), names, postal codes, countries.

Simple, portable rules with no database: ``customers.cim`` applies them to incoming
payloads, ``customers.resolution`` to the values it compares and blocks on.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import phonenumbers
import pycountry
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from rapidfuzz.distance import JaroWinkler

_email_validator = EmailValidator()
_PHONE_JUNK = re.compile(r"[\s().\-/]")


def clean_text(value: object) -> str:
    """NFC, no control characters, trimmed; None -> ''."""
    if value is None:
        return ""
    text = str(value)
    if text.isascii() and text.isprintable():
        return " ".join(text.split())  # the common case: already NFC, no control characters
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch for ch in text if ch in "\t " or unicodedata.category(ch)[0] != "C")
    return " ".join(text.split())


def normalize_email(value: str) -> str:
    """Case-folded, trimmed, NFKC email; raises ValueError when it is not an email address.

    Local parts may be internationalised (RFC 6531: ``zoë@example.com``): Django's
    validator only knows ASCII local parts, so their other characters stand in as
    letters for the check, while the domain is checked as Django does (IDNA).
    """
    email = unicodedata.normalize("NFKC", value).strip().lower()
    local, at, domain = email.rpartition("@")
    if not at or not local or len(local) > 64 or any(unicodedata.category(ch)[0] in "CZ" for ch in local):
        raise ValueError("is not a valid email address")
    ascii_local = "".join(ch if ch.isascii() else "x" for ch in local)
    try:
        _email_validator(f"{ascii_local}@{domain}")
    except ValidationError:
        raise ValueError("is not a valid email address") from None
    return email


def normalize_phone(value: str) -> str:
    """Digits with a leading + kept; formatting characters dropped."""
    phone = _PHONE_JUNK.sub("", unicodedata.normalize("NFKC", value).strip())
    if phone.startswith("00"):
        phone = "+" + phone[2:]
    if not re.fullmatch(r"\+?\d{4,20}", phone):
        raise ValueError("is not a valid telephone number")
    return phone


def address_key(line1: str, city: str, postal_code: str, country: str) -> str:
    parts = (line1, city, postal_code.replace(" ", ""), country)
    return "|".join(unicodedata.normalize("NFKC", p).casefold().strip() for p in parts)


# Mailbox providers whose addresses ignore a "+tag" (sub-addressing) or dots in the local part.
# Applied only by the ``provider`` email method, never to the stored value.
PLUS_TAG_PROVIDERS = frozenset(
    {"gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "icloud.com", "me.com", "fastmail.com"}
)
DOTLESS_PROVIDERS = frozenset({"gmail.com", "googlemail.com"})
PROVIDER_ALIASES = {"googlemail.com": "gmail.com"}

# The hub's own country aliases, on top of ISO 3166 (``pycountry``: names, official and common
# names, alpha-3 and alpha-2 codes): what people write that the standard does not list.
COUNTRY_ALIASES = {
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
    # Common English names ISO 3166 lists under another (its 2026 edition, via pycountry).
    "russia": "RU",
    "turkey": "TR",
    "holland": "NL",
    "north korea": "KP",
    "ivory coast": "CI",
    "uae": "AE",
    "the uk": "GB",
    "the us": "US",
    "the usa": "US",
}


def fold(text: str) -> str:
    """NFKC, case-folded, accents stripped, whitespace collapsed: 'ZOË  Müller' -> 'zoe muller'."""
    if text.isascii():
        return " ".join(text.lower().split())  # what the Unicode steps do to ASCII
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.split())


@lru_cache(maxsize=16384)
def normalize_name(text: str) -> str:
    """A name for comparing: folded, letters and inner spaces only ("O'Brien-Smith" -> "obriensmith")."""
    return "".join(ch for ch in fold(text) if ch.isalpha())


@lru_cache(maxsize=16384)
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


def _country_key(name: str) -> str:
    return fold(name).replace(".", "").replace("\u2019", "'")


@lru_cache(maxsize=1)
def country_codes() -> dict[str, str]:
    """Folded country name or code -> ISO 3166 alpha-2, for all of ISO 3166 and the hub's aliases."""
    codes: dict[str, str] = {}
    for country in pycountry.countries:
        names = [country.name, getattr(country, "official_name", ""), getattr(country, "common_name", "")]
        # "Korea, Republic of" is also written "Republic of Korea".
        names += [f"{after} {before}" for before, _, after in (n.partition(", ") for n in names if ", " in n)]
        for text in (*names, country.alpha_3, country.alpha_2):
            if text:
                codes[_country_key(text)] = country.alpha_2
    codes.update(COUNTRY_ALIASES)
    return codes


def country_code(name: str) -> str:
    """ISO 3166 alpha-2 for a country name or code ('United Kingdom' -> 'GB'); folded text otherwise."""
    folded = _country_key(name)
    if len(folded) == 2 and folded.isalpha():
        return country_codes().get(folded, folded.upper())
    return country_codes().get(folded, folded)


def normalize_postal_code(code: str, country: str = "") -> str:
    """Upper case, no spaces or dashes; US ZIP+4 cut to the five-digit ZIP."""
    compact = "".join(ch for ch in fold(code).upper() if ch.isalnum())
    if country_code(country) in ("US", "") and len(compact) == 9 and compact.isdigit():
        compact = compact[:5]
    return compact


@lru_cache(maxsize=16384)
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


def jaro_winkler(a: str, b: str) -> float:
    """Jaro-Winkler similarity in [0, 1] (prefix scale 0.1, up to four characters), by ``rapidfuzz``.

    As in Winkler's reference implementation (strcmp95), half the out-of-order matches
    count as transpositions rounded down: an odd count scores a little higher than the
    exact half the hub's earlier hand-written version took (tests/test_similarity.py).
    """
    if not a or not b:
        return 0.0  # nothing to compare (rapidfuzz calls two empty strings equal)
    return JaroWinkler.similarity(a, b, prefix_weight=0.1)
