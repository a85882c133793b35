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
