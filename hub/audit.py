"""What the configuration change log (django-auditlog) keeps of a secret: a fingerprint, never the value."""

from __future__ import annotations

import hashlib


def secret_fingerprint(value: str) -> str:
    """Enough to tell one secret from another in the log (32 bits of its SHA-256), nothing to sign with."""
    if not value or value == "None":
        return "(none)"
    return f"(secret sha256:{hashlib.sha256(value.encode()).hexdigest()[:8]})"
