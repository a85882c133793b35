"""How one delivery reaches one target: the one interface ``delivery.py`` calls, by target kind.

A sender takes the target, the delivery and the session ``egress.delivery_session`` made (https,
checked public addresses, no redirects), and returns the ``Answer`` of a success or raises a
``TransportError``. Webhooks are the generic sender (``webhook.py``); Salesforce core is its own
connector (``integrations.salesforce``), given the CIM Individual.
"""

from __future__ import annotations

from collections.abc import Callable

import requests

from integrations.downstream.models import Delivery, DownstreamTarget
from integrations.downstream.payload import individual_of
from integrations.downstream.webhook import send_webhook
from integrations.salesforce.client import SalesforceClient
from integrations.salesforce.mapping import contact_fields
from integrations.transport import Answer

Sender = Callable[[DownstreamTarget, Delivery, requests.Session], Answer]


def send_salesforce(target: DownstreamTarget, delivery: Delivery, session: requests.Session) -> Answer:
    """Upsert the person on the org at the target's URL (its My Domain), with the target's own token."""
    client = SalesforceClient(target.url, org_key=str(target.pk), session=session)
    return client.upsert(delivery.master_id, contact_fields(individual_of(delivery.change)))


SENDERS: dict[str, Sender] = {DownstreamTarget.WEBHOOK: send_webhook, DownstreamTarget.SALESFORCE: send_salesforce}
