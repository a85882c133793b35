"""Settings for the customer hub, read from the environment (see README, "Settings")."""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import sys
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from hub.embedded_pg import embedded_database_url  # pgserver itself is imported only when it runs
from hub.env import (
    check_unknown_names,
    database_from_url,
    env_bool,
    env_business_units,
    env_float,
    env_int,
    env_list,
    env_numeric_ids,
    env_str,
    env_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
TESTING = "pytest" in sys.modules or os.environ.get("HUB_TESTING") == "1"

check_unknown_names()

# ---------------------------------------------------------------------------
# Core
# ---------------------------------------------------------------------------
DEBUG = env_bool("HUB_DEBUG", False)
SECRET_KEY = env_str("HUB_SECRET_KEY")
if not SECRET_KEY:
    if DEBUG or TESTING:
        SECRET_KEY = "insecure-local-development-key-do-not-use-in-production"
    elif not env_str("DATABASE_URL"):
        # A command run from a checkout with no configuration at all: name both ways out.
        raise ImproperlyConfigured(
            "Set HUB_DEBUG=true for the embedded development database, "
            "or HUB_SECRET_KEY and DATABASE_URL for production."
        )
    else:
        raise ImproperlyConfigured("HUB_SECRET_KEY must be set (or HUB_DEBUG=true for local development).")
ALLOWED_HOSTS = env_list("HUB_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("HUB_CSRF_TRUSTED_ORIGINS", [])
DATA_DIR = Path(env_str("HUB_DATA_DIR", str(BASE_DIR / "var")))

INSTALLED_APPS = [
    "hub.admin_site.HubAdminConfig",  # django.contrib.admin, with the hub's action checks
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "django_q",
    "auditlog",
    "axes",
    "customers",
    "integrations",
    "integrations.marketing_cloud",
    "integrations.downstream",
]

MIDDLEWARE = [
    # Outermost: whatever refuses a request under /api/, the body is problem+json.
    "hub.middleware.ApiProblemMiddleware",
    "hub.middleware.RequestGuardMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "hub.middleware.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Who changed a configuration model (the change log's actor), from the logged-in user.
    "auditlog.middleware.AuditlogMiddleware",
    # Refuses a login from a client locked out after too many failures (last, as django-axes asks).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "hub.urls"
WSGI_APPLICATION = "hub.wsgi.application"
ASGI_APPLICATION = "hub.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# ---------------------------------------------------------------------------
# Database: PostgreSQL only. DATABASE_URL, else (development and tests only) the embedded server
# under var/, which production does not even install (requirements-local.txt).
# ---------------------------------------------------------------------------
_database_url = env_str("DATABASE_URL")
if not _database_url:
    if not (DEBUG or TESTING):
        raise ImproperlyConfigured(
            "DATABASE_URL must be set: the embedded PostgreSQL is for development and tests only "
            "(HUB_DEBUG=true, as `make run` sets it)."
        )
    _database_url = embedded_database_url(DATA_DIR)
DATABASES = {"default": database_from_url(_database_url)}
# What child processes (web, qcluster) of `manage.py run_hub` connect to.
EFFECTIVE_DATABASE_URL = _database_url
DATABASES["default"]["CONN_MAX_AGE"] = 0 if TESTING else 60
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# What sits between the hub and PostgreSQL. "pgbouncer" means PgBouncer in transaction pooling
# mode: consecutive transactions of one connection may run on different server connections, so
# nothing may outlive a transaction. The hub keeps none of it anyway (advisory locks are
# transaction-scoped, leases are rows, no LISTEN, no SET outside a transaction, and Django's
# psycopg 3 backend prepares no statements unless told to); what this adds is Django's own
# server-side cursors (.iterator() on PostgreSQL declares a WITH HOLD cursor and fetches it in
# later transactions), turned off, and a refusal of the options that would bring session state.
DATABASE_POOLER = env_str("HUB_DATABASE_POOLER", "none").lower()
if DATABASE_POOLER not in {"none", "pgbouncer"}:
    raise ImproperlyConfigured(f"HUB_DATABASE_POOLER must be none or pgbouncer, not {DATABASE_POOLER!r}.")
if DATABASE_POOLER == "pgbouncer":
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
    _session_options = sorted({"prepare_threshold", "assume_role", "options"} & set(DATABASES["default"]["OPTIONS"]))
    if _session_options:
        # prepare_threshold: named prepared statements live in one server session (PgBouncer 1.18,
        # Debian bookworm's, cannot carry them across; max_prepared_statements came in 1.21);
        # assume_role is a SET ROLE per connection; options are startup parameters PgBouncer refuses.
        raise ImproperlyConfigured(
            f"DATABASE_URL sets {', '.join(_session_options)}: session state that PgBouncer in transaction "
            "mode (HUB_DATABASE_POOLER=pgbouncer) does not keep. Set them on the database role instead."
        )
# Who holds a claim: this host's name, recorded with the process on every event the resolver
# claims (InboundEvent.claimed_by), so an operator sees which host a stuck claim belongs to.
INSTANCE_NAME = env_str("HUB_INSTANCE_NAME", socket.gethostname())[:60]
if not re.fullmatch(r"[A-Za-z0-9._-]+", INSTANCE_NAME):
    raise ImproperlyConfigured(f"HUB_INSTANCE_NAME must be letters, digits, '.', '_' or '-', not {INSTANCE_NAME!r}.")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Admin logins are throttled by django-axes: after HUB_LOGIN_FAILURE_LIMIT failed attempts from
# one client address, that address may not log in for HUB_LOGIN_COOLOFF_MINUTES (a 429 page).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("HUB_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = dt.timedelta(minutes=env_int("HUB_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False  # its log lines carry the attempted username; the attempts table keeps them
# The configuration models' change log (django-auditlog): before/after as JSON per change.
AUDITLOG_STORE_JSON_CHANGES = True
if TESTING:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# One date format across the admin (hub/formats/en): the locale's own differs from the one the hub prints.
FORMAT_MODULE_PATH = ["hub.formats"]

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve the admin's assets straight from the apps when collectstatic has not run.
WHITENOISE_USE_FINDERS = True

# Bodies above this are refused with 413 before anything is parsed or stored.
# How far ahead of the hub's clock an event's occurredAt may be (source clocks drift a little);
# further ahead is refused, since the newest change wins survivorship.
EVENT_CLOCK_SKEW_SECONDS = env_int("HUB_EVENT_CLOCK_SKEW_SECONDS", 300, minimum=0, maximum=86400)
MAX_BODY_BYTES = env_int("HUB_MAX_BODY_BYTES", 5 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_BODY_BYTES

# Region for phone numbers sent without a country code (ISO 3166 alpha-2), for E.164 matching keys.
HUB_DEFAULT_PHONE_REGION = env_str("HUB_DEFAULT_PHONE_REGION", "US").upper()
if len(HUB_DEFAULT_PHONE_REGION) != 2 or not HUB_DEFAULT_PHONE_REGION.isalpha():
    raise ImproperlyConfigured("HUB_DEFAULT_PHONE_REGION must be a two-letter country code such as US or GB")

# ---------------------------------------------------------------------------
# Security (production defaults; HUB_SECURE=false only behind no TLS at all)
# ---------------------------------------------------------------------------
SECURE = env_bool("HUB_SECURE", not (DEBUG or TESTING))
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SECURE_HSTS_SECONDS = 31536000 if SECURE else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_HSTS_PRELOAD = SECURE
SECURE_SSL_REDIRECT = SECURE
# Load-balancer probes speak plain HTTP to the health check.
SECURE_REDIRECT_EXEMPT = [r"^api/health$", r"^api/health/(live|ready)$"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"

# ---------------------------------------------------------------------------
# Django REST framework and the OpenAPI schema
# ---------------------------------------------------------------------------
# A cache every process shares (throttle counters); the table comes with the migrations.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "shared": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "hub_shared_cache"},
}
API_KEY_RATE = env_str("HUB_API_KEY_RATE", "6000/min")
if API_KEY_RATE and not re.fullmatch(r"\d+/(s|sec|m|min|h|hour|d|day)", API_KEY_RATE):
    raise ImproperlyConfigured(f"HUB_API_KEY_RATE must look like 6000/min, not {API_KEY_RATE!r}.")

REST_FRAMEWORK = {
    "DEFAULT_THROTTLE_CLASSES": ["hub.api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["hub.api.auth.ApiKeyAuthentication"],
    # Every view names its scope (required_scope); one that names none is refused (hub/api/).
    "DEFAULT_PERMISSION_CLASSES": ["hub.api.permissions.HasScope"],
    "DEFAULT_PAGINATION_CLASS": "hub.paging.ApiPagination",
    "PAGE_SIZE": 50,
    # Strict JSON (no NaN, Infinity, 1e400, lone surrogates or deep nesting): 400 naming the field.
    "DEFAULT_PARSER_CLASSES": [
        "hub.strict_json.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "hub.api.problems.problem_exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Customer hub API",
    "DESCRIPTION": "Golden customer records fed by Salesforce Marketing Cloud and other retail systems.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "hub.schema.document_request_guard",
        "hub.schema.document_problems",
    ],
}

# ---------------------------------------------------------------------------
# django-q2: ORM broker on the default database, so an enqueue commits (or
# rolls back) with the event row that caused it. timeout stays well below
# retry, or a slow task would be handed to a second worker while still running.
# ---------------------------------------------------------------------------
Q_TIMEOUT = env_int("HUB_Q_TIMEOUT", 60, minimum=5)
Q_RETRY = env_int("HUB_Q_RETRY", 180, minimum=10)
if Q_RETRY <= Q_TIMEOUT * 2:
    raise ImproperlyConfigured(
        f"HUB_Q_RETRY ({Q_RETRY}s) must be more than twice HUB_Q_TIMEOUT ({Q_TIMEOUT}s), "
        "or a running task is handed to a second worker."
    )
# The resolver (integrations.resolver): events per batch, a claim's lease, one task's working time.
RESOLVER_BATCH = env_int("HUB_RESOLVER_BATCH", 100, minimum=1, maximum=1000)
RESOLVER_LEASE = 2 * Q_TIMEOUT
RESOLVER_TASK_SECONDS = Q_TIMEOUT / 2
Q_WORKERS = env_int("HUB_Q_WORKERS", 2, minimum=1, maximum=64)
Q_CLUSTER = {
    "name": "hub",
    "orm": "default",
    "broker_class": "integrations.queue.HubOrmBroker",
    "workers": Q_WORKERS,
    "timeout": Q_TIMEOUT,
    "retry": Q_RETRY,
    "max_attempts": env_int("HUB_Q_MAX_ATTEMPTS", 5, minimum=1),
    "ack_failures": False,
    # A cluster takes no more tasks than it has workers, one at a time: what it holds in its
    # local queue waits there while another host's workers may be idle.
    "queue_limit": Q_WORKERS,
    "bulk": 1,
    "poll": 0.1,
    "save_limit": 1000,
    "catch_up": False,
    "recycle": 500,
    "label": "Task queue",
}

# ---------------------------------------------------------------------------
# Salesforce Marketing Cloud
# ---------------------------------------------------------------------------
MC_AUTH_BASE_URL = env_url("MC_AUTH_BASE_URL")
MC_REST_BASE_URL = env_url("MC_REST_BASE_URL")
MC_CLIENT_ID = env_str("MC_CLIENT_ID")
MC_CLIENT_SECRET = env_str("MC_CLIENT_SECRET")
MC_ACCOUNT_ID = env_str("MC_ACCOUNT_ID")
if MC_ACCOUNT_ID and not MC_ACCOUNT_ID.isdigit():
    raise ImproperlyConfigured(f"MC_ACCOUNT_ID must be the numeric MID, not {MC_ACCOUNT_ID!r}.")
MC_JWT_SECRET = env_str("MC_JWT_SECRET")
# Journey Builder JWTs: an exp claim is required (a token without one could be replayed forever),
# and no token may live longer than this (exp - iat, or exp - now without iat), in seconds.
MC_JWT_REQUIRE_EXP = env_bool("MC_JWT_REQUIRE_EXP", True)
MC_JWT_MAX_LIFETIME = env_int("MC_JWT_MAX_LIFETIME", 15 * 60, minimum=60, maximum=24 * 3600)
MC_DE_KEY = env_str("MC_DE_KEY", "Individual")
MC_DE_PRIMARY_KEY = env_str("MC_DE_PRIMARY_KEY", "SubscriberKey")
MC_MASTER_ID_FIELD = env_str("MC_MASTER_ID_FIELD", "GlobalPartyId")
# The attribute set (the data extension's *name*) that Data Designer links to contacts, when there
# is one: the activity then may bind {{Contact.Attribute."<set>".Field}}. Journey Builder cannot
# compile such a binding without the link, so by default the activity binds the entry source only.
MC_ATTRIBUTE_SET = env_str("MC_ATTRIBUTE_SET")
if any(character in MC_ATTRIBUTE_SET for character in '"{}'):
    raise ImproperlyConfigured("MC_ATTRIBUTE_SET is a data extension name: no quotes or braces.")
# Verifies ENS notification batches; else the key stored by `manage.py mc_ens_register`.
MC_ENS_SIGNATURE_KEY = env_str("MC_ENS_SIGNATURE_KEY")
# The ListID of the All Subscribers list (one per business unit, comma-separated): an ENS
# unsubscribe from it is a global do-not-market, from any other list that list's consent only.
# Unset, the hub cannot tell them apart and records every unsubscribe as a global
# do-not-market (and the list's consent too), so nobody who unsubscribed is mailed again.
MC_ALL_SUBSCRIBERS_LIST_ID = env_numeric_ids("MC_ALL_SUBSCRIBERS_LIST_ID")
# Several business units (MC_BUSINESS_UNITS=A,B with MC_BU_A_MID, ..._DE_KEY, ..._JWT_SECRET,
# ..._ENS_SIGNATURE_KEY), sharing the installed package's client ID and secret; the first listed is
# the default unit. Unset: one unit made of MC_ACCOUNT_ID, MC_DE_KEY, MC_JWT_SECRET, MC_ENS_SIGNATURE_KEY.
MC_BUSINESS_UNITS = env_business_units("MC_BUSINESS_UNITS", default_de_key=MC_DE_KEY)
if MC_BUSINESS_UNITS and (MC_ACCOUNT_ID or MC_JWT_SECRET or MC_ENS_SIGNATURE_KEY):
    raise ImproperlyConfigured(
        "With MC_BUSINESS_UNITS set, each unit's MID and secrets are MC_BU_<NAME>_MID, _JWT_SECRET and "
        "_ENS_SIGNATURE_KEY: unset MC_ACCOUNT_ID, MC_JWT_SECRET and MC_ENS_SIGNATURE_KEY."
    )
# How long after `manage.py mc_ens_register` opens a registration the hub accepts ENS's
# verification handshake for it (ENS posts it within 30 s of the callback's creation).
ENS_HANDSHAKE_WINDOW_SECONDS = env_int("HUB_ENS_HANDSHAKE_WINDOW_SECONDS", 15 * 60, minimum=60, maximum=24 * 3600)
# A GDPR erasure also deletes the person's contacts in Marketing Cloud (contacts delete by key).
MC_ERASE_CONTACTS = env_bool("MC_ERASE_CONTACTS", False)
MC_HTTP_TIMEOUT = env_float("MC_HTTP_TIMEOUT", 15.0, minimum=0.1)
if MC_HTTP_TIMEOUT * 2 >= Q_TIMEOUT:
    raise ImproperlyConfigured("MC_HTTP_TIMEOUT must be under half of HUB_Q_TIMEOUT.")
MC_SANDBOX_PORT = env_int("MC_SANDBOX_PORT", 8765, minimum=1, maximum=65535)
HUB_PORT = env_int("HUB_PORT", 8000, minimum=1, maximum=65535)
# ---------------------------------------------------------------------------
# Salesforce core (a downstream target of kind "salesforce"): read by the connector,
# integrations.salesforce.client.SalesforceSettings
# ---------------------------------------------------------------------------
SF_CLIENT_ID = env_str("SF_CLIENT_ID")
SF_CLIENT_SECRET = env_str("SF_CLIENT_SECRET")
SF_API_VERSION = env_str("SF_API_VERSION", "v62.0")
SF_SOBJECT = env_str("SF_SOBJECT", "Contact")
SF_MASTER_ID_FIELD = env_str("SF_MASTER_ID_FIELD", "Global_Customer_Id__c")
# ---------------------------------------------------------------------------
# Downstream delivery
# ---------------------------------------------------------------------------
DOWNSTREAM_MAX_ATTEMPTS = env_int("HUB_DOWNSTREAM_MAX_ATTEMPTS", 12, minimum=1, maximum=100)
# Downstream targets get personal data: https to public addresses only (integrations.downstream.egress).
# Receivers on this machine over plain http (the demo, the tests) need both switches; HUB_DEBUG=true and
# the test suite turn them on unless set. Private, link-local (cloud metadata) and other special addresses
# are refused whatever these say.
DOWNSTREAM_ALLOW_HTTP = env_bool("HUB_DOWNSTREAM_ALLOW_HTTP", DEBUG or TESTING)
DOWNSTREAM_ALLOW_LOOPBACK = env_bool("HUB_DOWNSTREAM_ALLOW_LOOPBACK", DEBUG or TESTING)

WRITEBACK_MAX_ATTEMPTS = env_int("HUB_WRITEBACK_MAX_ATTEMPTS", 8, minimum=1, maximum=50)
# Due Marketing Cloud write-backs from which a flush sends them through the asynchronous data-extension
# API (up to 10,000 rows a request) instead of rowsets of 50; 0 never does. Below it nothing changes.
MC_ASYNC_WRITEBACK_THRESHOLD = env_int("HUB_MC_ASYNC_WRITEBACK_THRESHOLD", 5000, minimum=0, maximum=10_000_000)

# ---------------------------------------------------------------------------
# Operations: /metrics (integrations.metrics) answers only with this bearer token, 404 while unset.
# ---------------------------------------------------------------------------
METRICS_TOKEN = env_str("HUB_METRICS_TOKEN")
if METRICS_TOKEN and len(METRICS_TOKEN) < 24:
    raise ImproperlyConfigured("HUB_METRICS_TOKEN must be at least 24 characters (e.g. `openssl rand -hex 32`).")

# ---------------------------------------------------------------------------
# Logging: IDs only, never personal data. One record is one line: SingleLineFormatter escapes
# control characters in every logged value, so no value can forge a line (hub/log_format.py).
# ---------------------------------------------------------------------------
LOG_LEVEL = env_str("HUB_LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"HUB_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {LOG_LEVEL!r}.")
# HUB_LOG_FORMAT=json: one JSON object a line (python-json-logger) for log shippers, with the event and
# sync-run IDs as fields of their own; text (the default): the single-line format above.
LOG_FORMAT = env_str("HUB_LOG_FORMAT", "text").lower()
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"HUB_LOG_FORMAT must be text or json, not {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {
            "()": "hub.log_format.SingleLineFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
        "json": {"()": "hub.log_format.HubJsonFormatter"},
    },
    # Every record gets the event and sync-run IDs of the work it was logged in (hub.log_context).
    "filters": {"log_context": {"()": "hub.log_context.LogContextFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["log_context"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django-q": {"level": "INFO" if DEBUG else "WARNING"},
        "pgserver": {"level": "WARNING"},
        # django-axes logs every login at INFO; lockouts (WARNING) are what operators need.
        "axes": {"level": "WARNING"},
    },
}
