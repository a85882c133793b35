"""``manage.py mc_ens_register URL``: register the hub's ENS callback and subscribe it to unsubscribes.

1. Opens a registration: an ``EnsCallback`` row with no callback ID, which the running
   hub's ENS view fills in from the one handshake it accepts for it, within
   ``ENS_HANDSHAKE_WINDOW_SECONDS``. Without an open registration the hub refuses handshakes.
2. ``POST /platform/v1/ens-callbacks``: while that request is open ENS POSTs
   ``{callbackId, verificationKey}`` to URL; the response carries the callback's ID and
   signature key, the only time ENS ever shows the key, and it is stored.
3. ``POST /platform/v1/ens-verify`` with the verification key the handshake stored.
4. ``POST /platform/v1/ens-subscriptions`` for the chosen event types.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from integrations.marketing_cloud.client import MarketingCloudClient
from integrations.marketing_cloud.ens import awaiting_handshake, handshake_window_start, unfinished_registrations
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
        # Registrations of earlier runs that died or failed (past their window, so no run is still
        # using them): no callback ENS signs for, and the hub takes no handshake for them any more.
        unfinished_registrations().filter(created_at__lt=handshake_window_start()).delete()
        registration = EnsCallback.objects.create(name=name, url=url)
        try:
            created = client.request(
                "POST",
                "/platform/v1/ens-callbacks",
                json=[{"callbackName": name, "url": url, "maxBatchSize": max_batch_size}],
            )
        except TransportError as exc:
            _close(registration)
            raise CommandError(f"Creating the callback failed: {exc.message}") from None
        item = created[0] if isinstance(created, list) and created else {}
        callback_id, signature_key = item.get("callbackId"), item.get("signatureKey")
        if not callback_id or not signature_key:
            _close(registration)
            raise CommandError("Marketing Cloud's answer carried no callbackId/signatureKey.")
        # Usually this registration's own row; with two registrations open at once, the handshakes
        # may have landed the other way round, so the row is found by the callback ID ENS named.
        callback = EnsCallback.objects.filter(callback_id=callback_id, verified_at__isnull=True).first()
        if callback is None or not callback.verification_key:
            _close(registration)
            raise CommandError(
                f"Callback {callback_id} was created, but the hub behind {url} did not receive its verification "
                "handshake. Is the hub running and reachable at that URL?"
            )
        _close(registration)  # when the handshake landed in another run's row
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


def _close(registration: EnsCallback) -> None:
    """Drop this run's registration if no handshake took it, so the hub stops accepting one for it.

    A registration a handshake did take is left alone: it may be a concurrent run's callback. If
    it is not, it never gets a signature key, and a later run deletes it once its window is over.
    """
    awaiting_handshake().filter(pk=registration.pk).delete()
