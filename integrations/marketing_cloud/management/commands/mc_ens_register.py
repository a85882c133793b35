"""``manage.py mc_ens_register URL``: register the hub's ENS callback and subscribe it to unsubscribes.

1. ``POST /platform/v1/ens-callbacks``: ENS immediately POSTs ``{callbackId,
   verificationKey}`` to URL, which the running hub stores; the response carries the
   callback's signature key, the only time ENS ever shows it, and it is stored.
2. ``POST /platform/v1/ens-verify`` with the stored verification key.
3. ``POST /platform/v1/ens-subscriptions`` for the chosen event types.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from integrations.marketing_cloud.client import MarketingCloudClient
from integrations.marketing_cloud.models import EnsCallback
from integrations.transport import TransportError

DEFAULT_EVENT_TYPES = ["EngagementEvents.EmailUnsubscribe"]


class Command(BaseCommand):
    help = "Register this hub's ENS callback URL with Marketing Cloud and subscribe it to event types."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("url", help="Public callback URL, e.g. https://hub.example.com/api/v1/marketing-cloud/ens")
        parser.add_argument("--name", default="customer-hub", help="Callback and subscription name")
        parser.add_argument(
            "--event-type",
            action="append",
            dest="event_types",
            help="Event category type to subscribe to (repeatable); default EmailUnsubscribe",
        )
        parser.add_argument("--max-batch-size", type=int, default=1000)
        parser.add_argument(
            "--allow-insecure",
            action="store_true",
            help="Allow http and ports (local sandbox only; ENS itself requires https://host/path)",
        )

    def handle(
        self,
        *args: Any,
        url: str,
        name: str,
        event_types: list[str] | None,
        max_batch_size: int,
        allow_insecure: bool,
        **options: Any,
    ) -> None:
        parts = urlsplit(url)
        if parts.query or parts.fragment:
            raise CommandError("The callback URL must have no query string or fragment.")
        if not allow_insecure and (parts.scheme != "https" or parts.port is not None):
            raise CommandError("ENS accepts only https://host[/path] callback URLs, without a port.")
        if not 100 <= max_batch_size <= 1000:
            raise CommandError("--max-batch-size must be between 100 and 1000.")
        event_types = event_types or DEFAULT_EVENT_TYPES
        client = MarketingCloudClient.from_settings()
        try:
            created = client.request(
                "POST",
                "/platform/v1/ens-callbacks",
                json=[{"callbackName": name, "url": url, "maxBatchSize": max_batch_size}],
            )
        except TransportError as exc:
            raise CommandError(f"Creating the callback failed: {exc.message}") from None
        item = created[0] if isinstance(created, list) and created else {}
        callback_id, signature_key = item.get("callbackId"), item.get("signatureKey")
        if not callback_id or not signature_key:
            raise CommandError("Marketing Cloud's answer carried no callbackId/signatureKey.")
        callback = EnsCallback.objects.filter(callback_id=callback_id).first()
        if callback is None or not callback.verification_key:
            raise CommandError(
                f"Callback {callback_id} was created, but the hub behind {url} did not receive its verification "
                "handshake. Is the hub running and reachable at that URL?"
            )
        callback.name, callback.url, callback.signature_key = name, url, signature_key
        callback.save()
        try:
            client.request(
                "POST",
                "/platform/v1/ens-verify",
                json={"callbackId": callback_id, "verificationKey": callback.verification_key},
            )
            subscribed = client.request(
                "POST",
                "/platform/v1/ens-subscriptions",
                json=[{"subscriptionName": name, "callbackId": callback_id, "eventCategoryTypes": event_types}],
            )
        except TransportError as exc:
            raise CommandError(f"Verifying or subscribing callback {callback_id} failed: {exc.message}") from None
        subscription = subscribed[0] if isinstance(subscribed, list) and subscribed else {}
        callback.verified_at = timezone.now()
        callback.subscription_id = str(subscription.get("subscriptionId") or "")
        callback.event_types = event_types
        callback.save()
        self.stdout.write(
            f"Callback {callback_id} verified and subscribed to {', '.join(event_types)}; "
            "its signature key is stored (Marketing Cloud shows it only once)."
        )
