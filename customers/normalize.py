"""Normalisation of the values the hub matches on (simple, portable rules)."""

from __future__ import annotations

import re
import unicodedata

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator

_email_validator = EmailValidator()
_PHONE_JUNK = re.compile(r"[\s().\-/]")


def clean_text(value: object) -> str:
    """NFC, no control characters, trimmed; None -> ''."""
    if value is None:
        return ""
    text = unicodedata.normalize("NFC", str(value))
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
