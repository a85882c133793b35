"""Typed readers for the environment variables the hub is configured with.

Every variable the hub understands is declared here, so that a typo in a name
(``HUB_DEBGU``) or a malformed value (``HUB_DEBUG=maybe``) stops start-up with a
message naming the variable, instead of silently falling back to a default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

# Names the hub reads. Anything else with one of the hub's prefixes is a typo.
KNOWN_NAMES: frozenset[str] = frozenset(
    {
        "HUB_SECRET_KEY",
        "HUB_DEBUG",
        "HUB_ALLOWED_HOSTS",
        "HUB_CSRF_TRUSTED_ORIGINS",
        "HUB_LOG_LEVEL",
        "HUB_DATA_DIR",
        "HUB_Q_WORKERS",
        "HUB_RESOLVER_BATCH",
        "HUB_Q_TIMEOUT",
        "HUB_Q_RETRY",
        "HUB_Q_MAX_ATTEMPTS",
        "HUB_WRITEBACK_MAX_ATTEMPTS",
        "HUB_MC_ASYNC_WRITEBACK_THRESHOLD",
        "HUB_MAX_BODY_BYTES",
        "HUB_SECURE",
        "HUB_PORT",
        "HUB_TESTING",
        "HUB_API_KEY_RATE",
        "HUB_FAULT_POINT",
        "HUB_FAULT_MARKER",
        "MC_AUTH_BASE_URL",
        "MC_REST_BASE_URL",
        "MC_CLIENT_ID",
        "MC_CLIENT_SECRET",
        "MC_ACCOUNT_ID",
        "MC_JWT_SECRET",
        "MC_JWT_REQUIRE_EXP",
        "MC_JWT_MAX_LIFETIME",
        "MC_DE_KEY",
        "MC_DE_PRIMARY_KEY",
        "MC_MASTER_ID_FIELD",
        "MC_ATTRIBUTE_SET",
        "MC_HTTP_TIMEOUT",
        "MC_ENS_SIGNATURE_KEY",
        "MC_ALL_SUBSCRIBERS_LIST_ID",
        "MC_ERASE_CONTACTS",
        "MC_BUSINESS_UNITS",
        "HUB_ENS_HANDSHAKE_WINDOW_SECONDS",
        "HUB_LOGIN_FAILURE_LIMIT",
        "HUB_EVENT_CLOCK_SKEW_SECONDS",
        "HUB_LOGIN_COOLOFF_MINUTES",
        "MC_SANDBOX_PORT",
        "SF_CLIENT_ID",
        "SF_CLIENT_SECRET",
        "SF_API_VERSION",
        "SF_SOBJECT",
        "SF_MASTER_ID_FIELD",
        "HUB_DOWNSTREAM_MAX_ATTEMPTS",
        "HUB_DOWNSTREAM_ALLOW_HTTP",
        "HUB_DOWNSTREAM_ALLOW_LOOPBACK",
        "HUB_DEFAULT_PHONE_REGION",
        "HUB_DATABASE_POOLER",
        "HUB_INSTANCE_NAME",
        "HUB_METRICS_TOKEN",
        "HUB_LOG_FORMAT",
    }
)
CHECKED_PREFIXES: tuple[str, ...] = ("HUB_", "MC_", "SF_")
# Per business unit names, MC_BU_<NAME>_<FIELD> (read by env_business_units for the names MC_BUSINESS_UNITS lists).
BUSINESS_UNIT_FIELDS: tuple[str, ...] = ("MID", "DE_KEY", "JWT_SECRET", "ENS_SIGNATURE_KEY")
_BUSINESS_UNIT_NAME = re.compile(r"^[A-Z][A-Z0-9]{0,29}$")

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def check_unknown_names(environ: Mapping[str, str] | None = None) -> None:
    """Refuse variables that look like ours but are not known (typos)."""
    environ = os.environ if environ is None else environ
    unit_names = {
        f"MC_BU_{unit}_{field}"
        for unit in (item.strip() for item in environ.get("MC_BUSINESS_UNITS", "").split(","))
        for field in BUSINESS_UNIT_FIELDS
    }
    unknown = sorted(
        name
        for name in environ
        if name.startswith(CHECKED_PREFIXES) and name not in KNOWN_NAMES and name not in unit_names
    )
    if unknown:
        raise ImproperlyConfigured(
            f"Unknown setting(s) in the environment: {', '.join(unknown)}. "
            f"Known names: {', '.join(sorted(KNOWN_NAMES))}."
        )


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_required(name: str) -> str:
    value = env_str(name)
    if not value:
        raise ImproperlyConfigured(f"{name} must be set.")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}.")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, not {value}.")
    return value


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}.") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_numeric_ids(name: str) -> list[str]:
    """Comma-separated positive integer IDs (e.g. Marketing Cloud ListIDs), as text; [] when unset."""
    values = env_list(name, [])
    for value in values:
        if not value.isascii() or not value.isdigit() or int(value) == 0 or len(value) > 19:
            raise ImproperlyConfigured(f"{name} must be positive integer IDs separated by commas, not {value!r}.")
    return values


def env_business_units(name: str, *, default_de_key: str) -> tuple[dict[str, str], ...]:
    """The business units ``name`` lists (``A,B``), each from ``MC_BU_<A>_MID`` and its siblings; () when unset.

    Each unit needs its numeric MID and its JWT signing secret; its data extension key defaults to
    ``default_de_key``, its ENS signature key is optional. Two units with the same MID, JWT secret or
    ENS key are refused: the secret that verifies a call is what names its unit.
    """
    units: list[dict[str, str]] = []
    for unit in env_list(name, []):
        if not _BUSINESS_UNIT_NAME.match(unit):
            raise ImproperlyConfigured(f"{name}: {unit!r} is not a unit name (capital letters and digits, 1-30).")
        prefix = f"MC_BU_{unit}_"
        mid = env_required(f"{prefix}MID")
        if not mid.isascii() or not mid.isdigit() or len(mid) > 20:
            raise ImproperlyConfigured(f"{prefix}MID must be the numeric MID, not {mid!r}.")
        units.append(
            {
                "name": unit,
                "mid": mid,
                "de_key": env_str(f"{prefix}DE_KEY") or default_de_key,
                "jwt_secret": env_required(f"{prefix}JWT_SECRET"),
                "ens_signature_key": env_str(f"{prefix}ENS_SIGNATURE_KEY"),
            }
        )
    labels = {"name": "name", "mid": "MID", "jwt_secret": "JWT_SECRET", "ens_signature_key": "ENS_SIGNATURE_KEY"}
    for field, label in labels.items():
        values = [u[field] for u in units if u[field]]
        if len(values) != len(set(values)):
            raise ImproperlyConfigured(f"{name}: two business units share the same {label}.")
    return tuple(units)


def env_url(name: str, default: str = "") -> str:
    """An http(s) base URL without a trailing slash, or '' when unset."""
    value = env_str(name, default)
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ImproperlyConfigured(f"{name} must be an http(s) URL, not {value!r}.")
    if parts.query or parts.fragment:
        raise ImproperlyConfigured(f"{name} must not carry a query or fragment: {value!r}.")
    return value.rstrip("/")


def database_from_url(url: str) -> dict[str, object]:
    """Django DATABASES entry from a postgres:// URL (host may be a socket dir)."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL must be a postgres:// or postgresql:// URL (the hub runs on PostgreSQL only), "
            f"not {parts.scheme or url!r}."
        )
    query = dict(pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair)
    host = unquote(query.pop("host", "") or (parts.hostname or ""))
    name = unquote(parts.path.lstrip("/")) or "postgres"
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"DATABASE_URL has an invalid port: {url!r}.") from None
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parts.username or "postgres"),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(port or ""),
        "OPTIONS": {k: unquote(v) for k, v in query.items()},
    }
