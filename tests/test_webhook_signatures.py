"""The hub's webhook signatures are Standard Webhooks: the reference library verifies them."""

from __future__ import annotations

import base64
import datetime as dt
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from integrations.downstream.models import DownstreamTarget
from integrations.downstream.signing import sign
from tests.conftest import subscriber
from tests.queue import run_queued
from tests.webhook_receiver import WebhookReceiver


def new_secret() -> str:
    return DownstreamTarget._meta.get_field("secret").get_default()


def headers(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def test_a_new_targets_secret_has_the_specs_format():
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


def test_the_reference_library_accepts_the_hubs_signature_and_only_with_its_secret():
    secret, body, timestamp = new_secret(), b'{"type":"customer.updated","data":{"masterId":"m-1"}}', int(time.time())
    signature = sign(secret, "msg_42", timestamp, body)
    assert signature == Webhook(secret).sign("msg_42", dt.datetime.fromtimestamp(timestamp, dt.UTC), body.decode())
    Webhook(secret).verify(body, headers("msg_42", timestamp, signature), json_parse=False)  # raises if refused
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers("msg_42", timestamp, signature), json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers("msg_42", timestamp, signature), json_parse=False)


@pytest.mark.django_db(transaction=True)
def test_the_test_receiver_refuses_a_delivery_signed_with_another_secret(journey, sandbox):
    with WebhookReceiver(new_secret()) as receiver:
        DownstreamTarget.objects.create(name="crm", url=receiver.url, secret=new_secret())
        journey.execute(subscriber())
        run_queued()
        assert receiver.attempts and receiver.bad_signatures == len(receiver.attempts)
        assert receiver.received == []
