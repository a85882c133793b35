"""Standard Webhooks signatures: ``webhook-signature: v1,<base64 HMAC-SHA256(id.timestamp.body)>``.

The secret is ``whsec_`` followed by the base64 of the key bytes (the spec's format).
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, msg_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """True when any ``v1,`` signature in the header matches (several during key rotation)."""
    expected = sign(secret, msg_id, timestamp, body).encode()
    return any(hmac.compare_digest(expected, part.encode()) for part in header.split() if part.startswith("v1,"))
