"""``manage.py mc_sandbox``: run the Marketing Cloud emulator, or play Journey Builder against the hub.

Defaults come from the hub's settings so that ``make run`` can start the sandbox and the hub with
matching credentials without repeating them on the command line.
"""

from __future__ import annotations

from typing import Any

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.marketing_cloud.sandbox.journey import DEMO_SUBSCRIBERS, send_execute
from integrations.marketing_cloud.sandbox.server import MarketingCloudSandbox, SandboxConfig

DEFAULT_PORT = 8765


class Command(BaseCommand):
    help = (
        "Run a local Salesforce Marketing Cloud emulator in the foreground, or with --send-demo URL "
        "act as Journey Builder and send the demo subscribers to a custom activity execute URL."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        defaults = SandboxConfig()
        parser.add_argument("--host", default="127.0.0.1", help="Interface to bind (default 127.0.0.1).")
        parser.add_argument(
            "--port",
            type=int,
            default=None,
            help="Port to listen on (default settings.MC_SANDBOX_PORT; 0 picks a free port).",
        )
        parser.add_argument("--client-id", default=None, help="Accepted client id (default settings.MC_CLIENT_ID).")
        parser.add_argument(
            "--client-secret", default=None, help="Accepted client secret (default settings.MC_CLIENT_SECRET)."
        )
        parser.add_argument("--account-id", default=None, help="MID to insist on (default settings.MC_ACCOUNT_ID).")
        parser.add_argument("--latency-ms", type=int, default=0, help="Delay added to every MC response.")
        parser.add_argument("--fail-rate", type=float, default=0.0, help="Fraction of REST calls failing with 500.")
        parser.add_argument("--token-ttl", type=int, default=defaults.token_ttl, help="Token lifetime in seconds.")
        parser.add_argument("--seed", type=int, default=None, help="Random seed, for repeatable --fail-rate runs.")
        parser.add_argument("--verbose", action="store_true", help="Log each request (method, path, status).")
        parser.add_argument("--send-demo", metavar="URL", default=None, help="Send demo execute calls to URL.")
        parser.add_argument(
            "--jwt-secret", default=None, help="JWT signing secret for --send-demo (default settings.MC_JWT_SECRET)."
        )
        parser.add_argument(
            "--count", type=int, default=None, help=f"Send only the first N of {len(DEMO_SUBSCRIBERS)} subscribers."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["send_demo"]:
            self._send_demo(options)
        else:
            self._serve(options)

    def _serve(self, options: dict[str, Any]) -> None:
        defaults = SandboxConfig()
        if not 0 <= options["fail_rate"] <= 1:
            raise CommandError("--fail-rate must be between 0 and 1.")
        if options["latency_ms"] < 0 or options["token_ttl"] < 1:
            raise CommandError("--latency-ms must not be negative and --token-ttl must be positive.")
        config = SandboxConfig(
            # An unset setting is an empty string, which falls back to the sandbox's own default.
            client_id=_pick(options["client_id"], "MC_CLIENT_ID", defaults.client_id),
            client_secret=_pick(options["client_secret"], "MC_CLIENT_SECRET", defaults.client_secret),
            account_id=_pick(options["account_id"], "MC_ACCOUNT_ID", ""),
            token_ttl=options["token_ttl"],
            latency_ms=options["latency_ms"],
            fail_rate=options["fail_rate"],
            seed=options["seed"],
        )
        port = options["port"]
        if port is None:
            port = int(getattr(settings, "MC_SANDBOX_PORT", DEFAULT_PORT) or DEFAULT_PORT)
        try:
            sandbox = MarketingCloudSandbox(options["host"], port, config, verbose=options["verbose"])
        except OSError as error:
            raise CommandError(f"Cannot listen on {options['host']}:{port}: {error.strerror or error}") from None
        # One line, flushed at once: scripts wait for it to learn the URL (useful with --port 0).
        self.stdout.write(f"Marketing Cloud sandbox listening on {sandbox.url}")
        self.stdout.flush()
        try:
            sandbox.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            sandbox.stop()

    def _send_demo(self, options: dict[str, Any]) -> None:
        secret = options["jwt_secret"] or getattr(settings, "MC_JWT_SECRET", "")
        if not secret:
            raise CommandError("No JWT signing secret: pass --jwt-secret or set MC_JWT_SECRET.")
        count = options["count"]
        if count is not None and count < 0:
            raise CommandError("--count must not be negative.")
        subscribers = DEMO_SUBSCRIBERS if count is None else DEMO_SUBSCRIBERS[:count]
        url = options["send_demo"]
        with requests.Session() as session:
            for number, subscriber in enumerate(subscribers, start=1):
                try:
                    response = send_execute(url, subscriber, secret, session=session)
                except requests.RequestException as error:
                    raise CommandError(f"Execute call {number} failed: {type(error).__name__}") from None
                # Only the status and the hub's event id are printed: the payload is personal data.
                self.stdout.write(f"{number} {response.status_code} eventId={_event_id(response)}")


def _pick(option: str | None, setting: str, fallback: str) -> str:
    if option is not None:
        return option
    return str(getattr(settings, setting, "") or fallback)


def _event_id(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return "-"
    value = data.get("eventId") if isinstance(data, dict) else None
    return "-" if value is None else str(value)
