"""``manage.py mc_check``: does the Marketing Cloud tenant fit what the hub is configured for?

One line per check, with the fix when it fails; the exit status is 1 when any check fails, so a
deployment (or ``make run``, against the sandbox) can stop on it. The checks:

- **token**: the installed package's credentials get a token from ``/v2/token``;
- **scopes**: the token grants what the hub calls need (shared reference §3.4);
- **data extension**: one has the external key ``MC_DE_KEY`` (SOAP ``Retrieve`` of ``DataExtension``);
- **primary key**, **master ID column**, **modified date column**: its fields (SOAP ``Retrieve`` of
  ``DataExtensionField`` filtered on ``DataExtension.CustomerKey``, the documented way to read a data
  extension's fields) have ``MC_DE_PRIMARY_KEY`` as the only primary key, ``MC_MASTER_ID_FIELD`` as
  Text long enough for a master ID, and the ``ModifiedDate`` Date field reconciliation filters on;
- **ENS callback**: the callback ``mc_ens_register`` stored is registered with ENS and verified;
- **activity**: the Journey Builder activity's ``config.json`` and each URL in it answer.

With several business units (``MC_BUSINESS_UNITS``) every check up to the ENS callback is made
for each unit, with a token for its MID, against its data extension and its callback, and named
with the unit (``token (B)``); the activity is one endpoint for every unit (its JWT secret names
the unit), so it is checked once.

Nothing is written to Marketing Cloud. No personal data is read: only metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from customers.models import Individual
from integrations.marketing_cloud import business_units, soap
from integrations.marketing_cloud.business_units import BusinessUnit
from integrations.marketing_cloud.client import MarketingCloudClient
from integrations.marketing_cloud.models import EnsCallback
from integrations.transport import TransportError

# What the hub's calls need: write-back and reconciliation, and registering and reading its ENS callback.
REQUIRED_SCOPES = (
    "data_extensions_read",
    "data_extensions_write",
    "event_notification_callback_create",
    "event_notification_callback_read",
    "event_notification_subscription_create",
)
MODIFIED_DATE_FIELD = "ModifiedDate"
ACTIVITY_PATH = "/api/v1/marketing-cloud/journey"
ENS_PATH = "/api/v1/marketing-cloud/ens"
FIELD_PROPERTIES = ["Name", "FieldType", "MaxLength", "IsPrimaryKey", "IsRequired", "DataExtension.CustomerKey"]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        if self.ok:
            return f"OK    {self.name}: {self.detail}"
        return f"FAIL  {self.name}: {self.detail}. Fix: {self.fix}"


class Command(BaseCommand):
    help = "Check the Marketing Cloud tenant against the hub's settings; one line per check, exit 1 on any failure."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--hub-url",
            default=None,
            help="The hub's public base URL, as the installed package's activity points to it "
            "(default http://127.0.0.1:HUB_PORT).",
        )

    def handle(self, *args: Any, hub_url: str | None, **options: Any) -> None:
        base = (hub_url or f"http://127.0.0.1:{settings.HUB_PORT}").rstrip("/")
        checks = run_checks(base)
        for check in checks:
            self.stdout.write(check.line())
        failed = [check for check in checks if not check.ok]
        if failed:
            self.stdout.write(f"{len(failed)} of {len(checks)} checks failed.")
            raise SystemExit(1)
        self.stdout.write(f"All {len(checks)} checks passed.")


def run_checks(hub_url: str) -> list[Check]:
    """Every check, in order; those that need a token are failed (not skipped) without one."""
    session = requests.Session()
    checks: list[Check] = []
    for unit in business_units.units():
        unit_checks = _unit_checks(unit, session)
        if unit.configured:
            for check in unit_checks:
                check.name = f"{check.name} ({unit.name})"
        checks += unit_checks
    checks += _activity_checks(session, hub_url)
    return checks


def _unit_checks(unit: BusinessUnit, session: requests.Session) -> list[Check]:
    """The checks of one business unit: its token, scopes, data extension and ENS callback."""
    checks: list[Check] = []
    client = None
    token: dict[str, Any] = {}
    mid = f"MC_BU_{unit.name}_MID" if unit.configured else "MC_ACCOUNT_ID"
    try:
        client = MarketingCloudClient.from_settings(session=session, unit=unit)
        token = client.token_info()
        checks.append(
            Check(
                "token",
                True,
                f"{f'for MID {unit.mid}, ' if unit.mid else ''}issued for {token.get('expires_in', '?')} s; "
                f"REST {token.get('rest_instance_url') or '-'}, SOAP {token.get('soap_instance_url') or '-'}",
            )
        )
    except TransportError as exc:
        checks.append(
            Check(
                "token",
                False,
                exc.message,
                "set MC_AUTH_BASE_URL (https://<subdomain>.auth.marketingcloudapis.com), MC_CLIENT_ID, "
                f"MC_CLIENT_SECRET and {mid} to a Server-to-Server installed package's values",
            )
        )
    if not token:
        skipped = "not checked: no token"
        fix = "fix the token first"
        checks += [
            Check(name, False, skipped, fix)
            for name in ("scopes", "data extension", "primary key", "master ID column", "modified date column")
        ]
        checks.append(_ens_check(None, unit))
    else:
        checks.append(_scope_check(str(token.get("scope") or "")))
        checks += _data_extension_checks(client, session, token, unit)
        checks.append(_ens_check(client, unit))
    return checks


def _scope_check(granted: str) -> Check:
    missing = [scope for scope in REQUIRED_SCOPES if scope not in granted.split()]
    if missing:
        return Check(
            "scopes",
            False,
            f"the token lacks {', '.join(missing)}",
            "in Setup > Apps > Installed Packages, give the package's API Integration component these "
            "permissions, then reinstall it",
        )
    return Check("scopes", True, ", ".join(REQUIRED_SCOPES))


def _data_extension_checks(
    client: Any, session: requests.Session, token: dict[str, Any], unit: BusinessUnit
) -> list[Check]:
    names = ("data extension", "primary key", "master ID column", "modified date column")
    de_key = unit.de_key
    soap_base = str(token.get("soap_instance_url") or "")
    if not soap_base:
        return [Check(n, False, "the token names no soap_instance_url", "use a v2 token endpoint") for n in names]
    try:
        found = soap.retrieve(
            session,
            soap_base,
            token["access_token"],
            "DataExtension",
            ["CustomerKey", "Name"],
            filter_property="CustomerKey",
            filter_value=de_key,
            timeout=client.timeout,
        )
        fields = (
            soap.retrieve(
                session,
                soap_base,
                token["access_token"],
                "DataExtensionField",
                FIELD_PROPERTIES,
                filter_property="DataExtension.CustomerKey",
                filter_value=de_key,
                timeout=client.timeout,
            )
            if found
            else []
        )
    except TransportError as exc:
        return [Check(n, False, f"SOAP Retrieve failed: {exc.message}", "check the SOAP endpoint") for n in names]
    if not found:
        setting = f"MC_BU_{unit.name}_DE_KEY" if unit.configured else "MC_DE_KEY"
        fix = (
            f"set {setting} to the External Key of the data extension the journey enters from "
            "(Email Studio > Subscribers > Data Extensions > Properties)"
        )
        missing = f"no data extension has the external key {de_key!r}"
        return [Check(names[0], False, missing, fix)] + [
            Check(n, False, "not checked: no data extension", "fix the data extension first") for n in names[1:]
        ]
    by_name = {f.get("Name", "").lower(): f for f in fields}
    checks = [Check("data extension", True, f"{de_key!r} ({found[0].get('Name', de_key)}) with {len(fields)} fields")]
    keys = [f.get("Name", "") for f in fields if soap.as_bool(f.get("IsPrimaryKey"))]
    pk_name = settings.MC_DE_PRIMARY_KEY
    if [k.lower() for k in keys] != [pk_name.lower()]:
        checks.append(
            Check(
                "primary key",
                False,
                f"the primary key is {', '.join(keys) or 'not set'}, MC_DE_PRIMARY_KEY is {pk_name!r}",
                "set MC_DE_PRIMARY_KEY to the data extension's one primary key field (the subscriber key); "
                "the write-back identifies rows by it alone",
            )
        )
    else:
        checks.append(Check("primary key", True, keys[0]))
    checks.append(_master_id_check(by_name.get(settings.MC_MASTER_ID_FIELD.lower())))
    modified = by_name.get(MODIFIED_DATE_FIELD.lower())
    if modified is None or modified.get("FieldType") != "Date":
        have = "missing" if modified is None else f"of type {modified.get('FieldType')}"
        checks.append(
            Check(
                "modified date column",
                False,
                f"{MODIFIED_DATE_FIELD} is {have}",
                f"add a Date field {MODIFIED_DATE_FIELD} that whatever writes the data extension keeps current: "
                "reconciliation reads the changes by it",
            )
        )
    else:
        checks.append(Check("modified date column", True, f"{modified.get('Name')} (Date)"))
    return checks


def _master_id_check(field: dict[str, str] | None) -> Check:
    name = settings.MC_MASTER_ID_FIELD
    needed = Individual._meta.get_field("master_id").max_length or 36
    if field is None:
        return Check(
            "master ID column",
            False,
            f"the data extension has no field {name!r}",
            f"add a Text({needed}) field {name} or set MC_MASTER_ID_FIELD to the field that holds the master ID",
        )
    kind, length = field.get("FieldType"), field.get("MaxLength") or ""
    if kind != "Text" or not length.isdigit() or int(length) < needed:
        return Check(
            "master ID column",
            False,
            f"{field.get('Name')} is {kind}({length or '?'})",
            f"make it a Text field of at least {needed} characters (master IDs are UUIDs)",
        )
    return Check("master ID column", True, f"{field.get('Name')} Text({length})")


def _ens_check(client: Any, unit: BusinessUnit) -> Check:
    name = "ENS callback"
    fix = "run `manage.py mc_ens_register https://<hub>" + ENS_PATH + "` while the hub is reachable at that URL"
    callbacks = EnsCallback.objects.filter(callback_id__isnull=False).exclude(signature_key="")
    if unit.configured:  # the unit's own callback, registered with its token
        callbacks = callbacks.filter(business_unit=unit.mid)
        fix += f" (`--unit {unit.name}` registers this unit only)"
    callback = callbacks.order_by("-id").first()
    if callback is None:
        return Check(name, False, "none is registered", fix)
    if callback.verified_at is None:
        return Check(name, False, f"callback {callback.callback_id} was never verified", fix)
    if client is None:
        return Check(name, False, "not checked with ENS: no token", "fix the token first")
    try:
        answer = client.request("GET", f"/platform/v1/ens-callbacks/{quote(callback.callback_id, safe='')}")
    except TransportError as exc:
        if exc.http_status == 404:
            return Check(name, False, f"ENS has no callback {callback.callback_id} (deleted?)", fix)
        return Check(name, False, f"reading it from ENS failed: {exc.message}", "check the token's scopes")
    status = str((answer or {}).get("status") or "")
    if status.lower() != "verified":
        return Check(name, False, f"callback {callback.callback_id} is {status or 'of unknown status'}", fix)
    return Check(name, True, f"{callback.callback_id} verified, {callback.url}")


def _activity_checks(session: requests.Session, hub_url: str) -> list[Check]:
    config_url = f"{hub_url}{ACTIVITY_PATH}/config.json"
    fix = "start the hub and pass its public URL as --hub-url (the installed package's activity endpoint)"
    try:
        response = session.get(config_url, timeout=10)
        config = response.json() if response.status_code == 200 else None
    except (requests.RequestException, ValueError) as exc:
        return [Check("activity config.json", False, f"{config_url} did not answer ({type(exc).__name__})", fix)]
    if not isinstance(config, dict):
        return [Check("activity config.json", False, f"{config_url} answered {response.status_code}", fix)]
    checks = [Check("activity config.json", True, config_url)]
    urls = {"execute": ((config.get("arguments") or {}).get("execute") or {}).get("url")}
    for action, item in (config.get("configurationArguments") or {}).items():
        if isinstance(item, dict):
            urls[action] = item.get("url")
    for action, url in urls.items():
        checks.append(_url_check(session, f"activity {action} URL", url))
    return checks


def _url_check(session: requests.Session, name: str, url: Any) -> Check:
    if not isinstance(url, str) or not url:
        return Check(name, False, "config.json names none", "check the activity's config.json")
    if not settings.DEBUG and not url.startswith("https://"):
        return Check(name, False, f"{url} is not https", "serve the hub over HTTPS: Journey Builder calls only https")
    try:
        # Unsigned on purpose: the hub must refuse it (401), which shows the route is there and checks JWTs.
        status = session.post(url, data=b"", headers={"Content-Type": "application/jwt"}, timeout=10).status_code
    except requests.RequestException as exc:
        return Check(name, False, f"{url} did not answer ({type(exc).__name__})", "check the URL is reachable")
    if status in (400, 401, 403, 415):
        return Check(name, True, f"{url} answers (refuses an unsigned call with {status})")
    if status >= 500 or status in (404, 405):
        return Check(name, False, f"{url} answered {status}", "check the hub's logs and the activity's URLs")
    return Check(name, False, f"{url} accepted an unsigned call ({status})", "the activity must verify the JWT")
