"""Every normalisation the hub matches and stores by: email, phone (E.164), names, postal codes, countries.

Simple, portable rules with no database: ``customers.cim`` applies them to incoming
payloads, ``customers.resolution`` to the values it compares and blocks on.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator

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


@lru_cache(maxsize=16384)
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
