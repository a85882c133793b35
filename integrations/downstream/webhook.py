"""The generic sender: a Standard Webhooks POST of the change to the target's URL.

Of the endpoint's answer only its status and size are kept, never its body (``transport.Answer``).
"""

from __future__ import annotations

import json
import time

import requests

from integrations.downstream.models import Delivery, DownstreamTarget
from integrations.downstream.payload import event_body
from integrations.downstream.signing import sign
from integrations.transport import Answer, raise_for_status, request

HTTP_TIMEOUT = 10.0
# An answer is counted up to this size and read no further (nothing of it is stored).
MAX_ANSWER_BYTES = 1024 * 1024


def send_webhook(target: DownstreamTarget, delivery: Delivery, session: requests.Session) -> Answer:
    body = json.dumps(event_body(delivery.change), separators=(",", ":"), default=str).encode()
    timestamp = int(time.time())
    msg_id = delivery.webhook_id
    answer = request(
        session,
        "POST",
        target.url,
        data=body,
        headers={
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(target.secret, msg_id, timestamp, body),
        },
        timeout=HTTP_TIMEOUT,
        system="webhook",
        max_bytes=MAX_ANSWER_BYTES,
    )
    raise_for_status(answer, what="the endpoint", label=answer.label())
    return answer
