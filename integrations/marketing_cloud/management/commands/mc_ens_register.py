"""``manage.py mc_ens_register URL``: register the hub's ENS callback and subscribe it to unsubscribes.

It can be run again. ENS refuses a second callback for a URL it already has, so the command first
lists the callbacks (``GET /platform/v1/ens-callbacks``) and works with the one registered for URL:

- verified, and the hub holds its signature key: reused as it is (renamed or resized with
  ``PUT /platform/v1/ens-callbacks`` if ``--name``/``--max-batch-size`` changed);
- verified, but the hub lacks its signature key (registered elsewhere, or the database was
  replaced): ``PUT /platform/v1/ens-regenerate`` gives it a new key, stored here; the old key
  stops signing;
- not verified, and the hub holds the verification key its handshake brought: verified now with
  ``POST /platform/v1/ens-verify``;
- not verified, without that key: ENS shows the key only in the handshake at creation, so the
  callback is deleted (its subscriptions first) and created again, as Salesforce's reference says
  to do after a failed verification.

Creating a callback:

1. Opens a registration: an ``EnsCallback`` row with no callback ID, which the running
   hub's ENS view fills in from the one handshake it accepts for it, within
   ``ENS_HANDSHAKE_WINDOW_SECONDS``. Without an open registration the hub refuses handshakes.
2. ``POST /platform/v1/ens-callbacks``: while that request is open ENS POSTs
   ``{callbackId, verificationKey}`` to URL; the response carries the callback's ID and
   signature key, the only time ENS ever shows the key, and it is stored.
3. ``POST /platform/v1/ens-verify`` with the verification key the handshake stored.

Then the subscription named ``--name`` is made to carry the chosen event types: created with
``POST /platform/v1/ens-subscriptions``, or changed with ``PUT`` if it exists with other types.

Business units: each unit's ENS is its own (callbacks and subscriptions are made with a token
for the unit's MID), so the command registers the URL once per configured unit (``--unit NAME``:
that one only), each callback with a signature key of its own, stored with the unit's MID
(``EnsCallback.business_unit``): a batch verified by that key is that unit's.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from integrations.marketing_cloud import business_units
from integrations.marketing_cloud.business_units import BusinessUnit
from integrations.marketing_cloud.client import MarketingCloudClient
from integrations.marketing_cloud.ens import awaiting_handshake, handshake_window_start, unfinished_registrations
from integrations.marketing_cloud.models import EnsCallback
from integrations.transport import TransportError

DEFAULT_EVENT_TYPES = ["EngagementEvents.EmailUnsubscribe"]
CALLBACKS_PATH = "/platform/v1/ens-callbacks"
SUBSCRIPTIONS_PATH = "/platform/v1/ens-subscriptions"


def same_callback_url(a: Any, b: str) -> bool:
    """Whether ENS's ``url`` is ours: scheme and host without case, the path without a trailing slash."""
    if not isinstance(a, str):
        return False
    first, second = urlsplit(a.strip()), urlsplit(b.strip())
    return (first.scheme.lower(), first.netloc.lower(), first.path.rstrip("/")) == (
        second.scheme.lower(),
        second.netloc.lower(),
        second.path.rstrip("/"),
    )


def _not_modified(exc: TransportError) -> bool:
    # ENS answers 304 "No Change" when an update changes nothing; the client reports it as an error.
    return exc.http_status == 304


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
            "--unit",
            default=None,
            help="Register for this business unit only (a name in MC_BUSINESS_UNITS); default: every unit",
        )
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
        unit: str | None = None,
        **options: Any,
    ) -> None:
        parts = urlsplit(url)
        if parts.query or parts.fragment:
            raise CommandError("The callback URL must have no query string or fragment.")
        if not allow_insecure and (parts.scheme != "https" or parts.port is not None):
            raise CommandError("ENS accepts only https://host[/path] callback URLs, without a port.")
        if not 100 <= max_batch_size <= 1000:
            raise CommandError("--max-batch-size must be between 100 and 1000.")
        chosen = [u for u in business_units.units() if unit is None or u.name == unit.upper()]
        if not chosen:
            names = ", ".join(u.name for u in business_units.units())
            raise CommandError(f"No business unit is named {unit!r} (MC_BUSINESS_UNITS: {names}).")
        self.url, self.name, self.max_batch_size = url, name, max_batch_size
        event_types = event_types or DEFAULT_EVENT_TYPES
        # Registrations of earlier runs that died or failed (past their window, so no run is still
        # using them): no callback ENS signs for, and the hub takes no handshake for them any more.
        unfinished_registrations().filter(created_at__lt=handshake_window_start()).delete()
        for each in chosen:
            self._register(each, event_types)

    def _register(self, unit: BusinessUnit, event_types: list[str]) -> None:
        """The callback and subscription of one business unit, with that unit's token."""
        self.unit = unit
        self.client = MarketingCloudClient.from_settings(unit=unit)
        url = self.url
        listed = self._call("GET", CALLBACKS_PATH, "Listing the callbacks")
        registered = [item for item in listed if isinstance(item, dict)] if isinstance(listed, list) else []
        mine = [item for item in registered if same_callback_url(item.get("url"), url)]
        callback, note = self._reuse(mine)
        if callback is None:
            callback, note = self._create(), "created, verified and subscribed"
        self._forget_other_callbacks_for_url(callback.callback_id, [item.get("callbackId") for item in registered])
        subscription = self._subscribe(callback, event_types)
        where = f"{unit.label}: " if unit.configured else ""
        self.stdout.write(
            f"{where}Callback {callback.callback_id} {note} to {', '.join(event_types)} ({subscription}); "
            "its signature key is stored (Marketing Cloud shows it only at creation or regeneration)."
        )

    # -- an existing callback for the URL ---------------------------------------------------------

    def _reuse(self, mine: list[dict[str, Any]]) -> tuple[EnsCallback | None, str]:
        """The callback ENS has for the URL, made usable, and what was done; None when it had to go.

        ENS refuses a second callback for one URL; should it list several anyway (the same URL
        written with and without a trailing slash), the best one is kept and the others deleted.
        """
        rows = {
            row.callback_id: row
            for row in EnsCallback.objects.filter(callback_id__in=[str(item.get("callbackId")) for item in mine])
        }

        def verified(item: dict[str, Any]) -> bool:
            return str(item.get("status", "")).lower() == "verified"

        def rank(item: dict[str, Any]) -> tuple[bool, bool, bool]:
            row = rows.get(str(item.get("callbackId")))
            return (
                verified(item) and bool(row and row.signature_key),
                verified(item),
                bool(row and row.verification_key),
            )

        ordered = sorted(mine, key=rank, reverse=True)
        for extra in ordered[1:]:
            self._delete_callback(str(extra["callbackId"]))
        if not ordered:
            return None, ""
        item = ordered[0]
        callback_id = str(item["callbackId"])
        row = rows.get(callback_id)
        steps = []
        is_verified = verified(item)
        if not is_verified and row is not None and row.verification_key:
            try:
                self.client.request(
                    "POST",
                    "/platform/v1/ens-verify",
                    json={"callbackId": callback_id, "verificationKey": row.verification_key},
                )
                is_verified = True
                steps.append("verified it with the verification key stored here")
            except TransportError as exc:
                if exc.http_status != 404:
                    raise CommandError(f"Verifying callback {callback_id} failed: {exc.message}") from None
                # 404: ENS takes that key no more for this callback; only a new callback helps.
        if not is_verified:
            self._delete_callback(callback_id)
            self.stdout.write(
                f"Callback {callback_id} for {self.url} was not verified and cannot be verified from here (ENS "
                "sends the verification key only while it creates a callback): deleted it; creating a new one."
            )
            return None, ""
        row = row or EnsCallback(callback_id=callback_id)
        row.business_unit = self.unit.state_key
        if not row.signature_key:
            row.signature_key = self._regenerate_signature_key(callback_id)
            steps.append("its signature key was not here, so it was regenerated (the old key no longer signs)")
        if self._update_name_and_batch_size(item):
            steps.append(f"renamed/resized to {self.name!r}, {self.max_batch_size} events a batch")
        row.name, row.url = self.name, self.url
        row.verified_at = row.verified_at or timezone.now()
        row.save()
        done = "; ".join(steps) if steps else "reused as it is"
        return row, f"was already registered for this URL (no new callback): {done}; subscribed"

    def _regenerate_signature_key(self, callback_id: str) -> str:
        answer = self._call(
            "PUT",
            "/platform/v1/ens-regenerate",
            f"Regenerating the signature key of callback {callback_id}",
            [{"callbackId": callback_id}],
        )
        key = (
            answer[0].get("signatureKey")
            if isinstance(answer, list) and answer and isinstance(answer[0], dict)
            else None
        )
        if not isinstance(key, str) or not key:
            raise CommandError(
                f"Marketing Cloud's answer to regenerating callback {callback_id}'s key had no signatureKey."
            )
        if self.unit.ens_signature_key:
            setting = f"MC_BU_{self.unit.name}_ENS_SIGNATURE_KEY" if self.unit.configured else "MC_ENS_SIGNATURE_KEY"
            self.stdout.write(f"{setting} no longer matches this callback; the regenerated key is stored here.")
        return key

    def _update_name_and_batch_size(self, item: dict[str, Any]) -> bool:
        """Rename or resize the callback if ``--name``/``--max-batch-size`` differ; whether it changed."""
        if (item.get("callbackName"), item.get("maxBatchSize")) == (self.name, self.max_batch_size):
            return False
        body = [{"callbackId": item["callbackId"], "callbackName": self.name, "maxBatchSize": self.max_batch_size}]
        try:
            self.client.request("PUT", CALLBACKS_PATH, json=body)
        except TransportError as exc:
            if _not_modified(exc):
                return False
            raise CommandError(f"Updating callback {item['callbackId']} failed: {exc.message}") from None
        return True

    def _delete_callback(self, callback_id: str) -> None:
        """Delete a callback at ENS, its subscriptions first (ENS refuses otherwise), and its row here."""
        subscriptions = self._call(
            "GET",
            f"/platform/v1/ens-subscriptions-by-cb/{callback_id}",
            f"Listing callback {callback_id}'s subscriptions",
        )
        for subscription in subscriptions or []:
            self._call(
                "DELETE",
                f"{SUBSCRIPTIONS_PATH}/{subscription['subscriptionId']}",
                f"Deleting a subscription of {callback_id}",
            )
        self._call("DELETE", f"{CALLBACKS_PATH}/{callback_id}", f"Deleting callback {callback_id}")
        EnsCallback.objects.filter(callback_id=callback_id).delete()

    def _forget_other_callbacks_for_url(self, keep: str | None, at_ens: list[Any]) -> None:
        """Rows for this URL whose callback ENS no longer has (deleted in Marketing Cloud): their keys sign nothing."""
        (
            # This unit's rows only: another unit's callbacks are not in this unit's listing.
            EnsCallback.objects.filter(url=self.url, callback_id__isnull=False, business_unit=self.unit.state_key)
            .exclude(callback_id=keep)
            .exclude(callback_id__in=[str(callback_id) for callback_id in at_ens if callback_id != keep])
            .delete()
        )

    # -- a new callback -----------------------------------------------------------------------

    def _create(self) -> EnsCallback:
        registration = EnsCallback.objects.create(name=self.name, url=self.url, business_unit=self.unit.state_key)
        try:
            created = self.client.request(
                "POST",
                CALLBACKS_PATH,
                json=[{"callbackName": self.name, "url": self.url, "maxBatchSize": self.max_batch_size}],
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
                f"Callback {callback_id} was created, but the hub behind {self.url} did not receive its verification "
                "handshake. Is the hub running and reachable at that URL? Run the command again: it deletes that "
                "callback and creates a new one."
            )
        _close(registration)  # when the handshake landed in another run's row
        callback.name, callback.url, callback.signature_key = self.name, self.url, signature_key
        callback.business_unit = self.unit.state_key
        callback.save()
        try:
            self.client.request(
                "POST",
                "/platform/v1/ens-verify",
                json={"callbackId": callback_id, "verificationKey": callback.verification_key},
            )
        except TransportError as exc:
            raise CommandError(
                f"Verifying callback {callback_id} failed: {exc.message}. Run the command again to retry."
            ) from None
        callback.verified_at = timezone.now()
        callback.save()
        return callback

    # -- the subscription ---------------------------------------------------------------------

    def _subscribe(self, callback: EnsCallback, event_types: list[str]) -> str:
        """Make the subscription named ``--name`` carry ``event_types``; say what was done."""
        existing = self._call(
            "GET",
            f"/platform/v1/ens-subscriptions-by-cb/{callback.callback_id}",
            f"Listing callback {callback.callback_id}'s subscriptions",
        )
        found = next(
            (s for s in existing or [] if isinstance(s, dict) and s.get("subscriptionName") == self.name), None
        )
        if found is None:
            subscribed = self._call(
                "POST",
                SUBSCRIPTIONS_PATH,
                f"Subscribing callback {callback.callback_id}",
                [
                    {
                        "subscriptionName": self.name,
                        "callbackId": callback.callback_id,
                        "eventCategoryTypes": event_types,
                    }
                ],
            )
            subscription = subscribed[0] if isinstance(subscribed, list) and subscribed else {}
            done = "subscription created"
        else:
            subscription = found
            done = "subscription kept"
            if sorted(found.get("eventCategoryTypes") or []) != sorted(event_types) or found.get("status") != "active":
                body = [
                    {
                        "subscriptionId": found["subscriptionId"],
                        "subscriptionName": self.name,
                        "eventCategoryTypes": event_types,
                        "filters": found.get("filters") or [],
                        "status": "active",
                    }
                ]
                try:
                    self.client.request("PUT", SUBSCRIPTIONS_PATH, json=body)
                except TransportError as exc:
                    if not _not_modified(exc):
                        raise CommandError(
                            f"Updating subscription {found['subscriptionId']} failed: {exc.message}"
                        ) from None
                done = "subscription updated"
        callback.subscription_id = str(subscription.get("subscriptionId") or "")
        callback.event_types = event_types
        callback.save(update_fields=["subscription_id", "event_types"])
        return done

    def _call(self, method: str, path: str, what: str, body: Any = None) -> Any:
        try:
            return self.client.request(method, path, json=body)
        except TransportError as exc:
            raise CommandError(f"{what} failed: {exc.message}") from None


def _close(registration: EnsCallback) -> None:
    """Drop this run's registration if no handshake took it, so the hub stops accepting one for it.

    A registration a handshake did take is left alone: it may be a concurrent run's callback. If
    it is not, it never gets a signature key, and a later run deletes it once its window is over.
    """
    awaiting_handshake().filter(pk=registration.pk).delete()
