"""``python -m sandboxes.marketing_cloud``: serve the Marketing Cloud emulator, or play Journey Builder.

Serving (the default) binds ``--host``/``--port`` and prints one line, ``Marketing Cloud sandbox
listening on <url>``, once it answers (scripts wait for it to learn the URL, useful with
``--port 0``). ``GET <url>/__sandbox/health`` answers 200 from then on.

``--send-demo EXECUTE_URL`` instead plays the demo subscribers through a journey whose entry source
holds them, one signed execute call each, and prints one line per call:
``<n> <status> eventId=<the hub's event id, or ->``; only the status and the hub's event id, since
the payload is personal data. With ``--fill-data-extension SANDBOX_URL`` it first writes the same
subscribers into that sandbox's data extension, as the tenant holds the rows a journey enters from
(the hub's reconciliation poller reads them there).

Credentials default to the variables the hub reads (``MC_CLIENT_ID``, ``MC_CLIENT_SECRET``,
``MC_ACCOUNT_ID``, ``MC_JWT_SECRET``, ``MC_SANDBOX_PORT``), so a hub and a sandbox started from the
same environment match without repeating them on the command line (``make run`` relies on it).
Plain Python: no Django.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import requests

from integrations.marketing_cloud.schema import INDIVIDUAL
from sandboxes.marketing_cloud.journey import DEMO_SUBSCRIBERS, send_demo
from sandboxes.marketing_cloud.server import MarketingCloudSandbox, SandboxConfig

DEFAULT_PORT = 8765


def _parser() -> argparse.ArgumentParser:
    defaults = SandboxConfig()
    parser = argparse.ArgumentParser(
        prog="python -m sandboxes.marketing_cloud",
        description=(
            "Run a local Salesforce Marketing Cloud emulator in the foreground, or with --send-demo URL "
            "act as Journey Builder and send the demo subscribers to a custom activity execute URL."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="Interface to bind (default 127.0.0.1).")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"Port to listen on (default MC_SANDBOX_PORT or {DEFAULT_PORT}; 0 picks one).",
    )
    parser.add_argument(
        "--client-id", default=None, help=f"Accepted client id (default MC_CLIENT_ID or {defaults.client_id})."
    )
    parser.add_argument("--client-secret", default=None, help="Accepted client secret (default MC_CLIENT_SECRET).")
    parser.add_argument("--account-id", default=None, help="MID to insist on (default MC_ACCOUNT_ID, else none).")
    parser.add_argument("--latency-ms", type=int, default=0, help="Delay added to every MC response.")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="Fraction of REST calls failing with 500.")
    parser.add_argument("--token-ttl", type=int, default=defaults.token_ttl, help="Token lifetime in seconds.")
    parser.add_argument("--seed", type=int, default=None, help="Random seed, for repeatable --fail-rate runs.")
    parser.add_argument("--verbose", action="store_true", help="Log each request (method, path, status).")
    parser.add_argument("--send-demo", metavar="EXECUTE_URL", default=None, help="Send demo execute calls to URL.")
    parser.add_argument(
        "--jwt-secret", default=None, help="JWT signing secret for --send-demo (default MC_JWT_SECRET)."
    )
    parser.add_argument(
        "--count", type=int, default=None, help=f"Send only the first N of {len(DEMO_SUBSCRIBERS)} subscribers."
    )
    parser.add_argument(
        "--fill-data-extension",
        metavar="SANDBOX_URL",
        default=None,
        help="With --send-demo: first write the subscribers into this sandbox's data extension.",
    )
    parser.add_argument(
        "--de-key", default=INDIVIDUAL.key, help=f"The data extension to fill (default {INDIVIDUAL.key})."
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    options = parser.parse_args(argv)
    if options.send_demo:
        return _send_demo(parser, options)
    if options.fill_data_extension:
        parser.error("--fill-data-extension goes with --send-demo")
    return _serve(parser, options)


def _credential(option: str | None, variable: str, fallback: str) -> str:
    # An unset or empty variable falls back to the sandbox's own default, as an unset setting does.
    if option is not None:
        return option
    return os.environ.get(variable) or fallback


def _serve(parser: argparse.ArgumentParser, options: argparse.Namespace) -> int:
    defaults = SandboxConfig()
    if not 0 <= options.fail_rate <= 1:
        parser.error("--fail-rate must be between 0 and 1.")
    if options.latency_ms < 0 or options.token_ttl < 1:
        parser.error("--latency-ms must not be negative and --token-ttl must be positive.")
    config = SandboxConfig(
        client_id=_credential(options.client_id, "MC_CLIENT_ID", defaults.client_id),
        client_secret=_credential(options.client_secret, "MC_CLIENT_SECRET", defaults.client_secret),
        account_id=_credential(options.account_id, "MC_ACCOUNT_ID", ""),
        token_ttl=options.token_ttl,
        latency_ms=options.latency_ms,
        fail_rate=options.fail_rate,
        seed=options.seed,
    )
    port = options.port
    if port is None:
        try:
            port = int(os.environ.get("MC_SANDBOX_PORT") or DEFAULT_PORT)
        except ValueError:
            parser.error("MC_SANDBOX_PORT must be a port number.")
    try:
        sandbox = MarketingCloudSandbox(options.host, port, config, verbose=options.verbose)
    except OSError as error:
        sys.stderr.write(f"Cannot listen on {options.host}:{port}: {error.strerror or error}\n")
        return 1
    sys.stdout.write(f"Marketing Cloud sandbox listening on {sandbox.url}\n")
    sys.stdout.flush()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            sandbox.serve_forever()
    finally:
        sandbox.stop()
    return 0


def _send_demo(parser: argparse.ArgumentParser, options: argparse.Namespace) -> int:
    secret = options.jwt_secret or os.environ.get("MC_JWT_SECRET", "")
    if not secret:
        parser.error("No JWT signing secret: pass --jwt-secret or set MC_JWT_SECRET.")
    if options.count is not None and options.count < 0:
        parser.error("--count must not be negative.")
    subscribers = DEMO_SUBSCRIBERS if options.count is None else DEMO_SUBSCRIBERS[: options.count]
    try:
        if options.fill_data_extension:
            _fill_data_extension(options, subscribers)
        responses = send_demo(options.send_demo, secret, subscribers)
    except requests.RequestException as error:
        # The class only: a message can carry the URL's query or a payload fragment.
        sys.stderr.write(f"The demo stopped: {type(error).__name__}\n")
        return 1
    for number, response in enumerate(responses, start=1):
        sys.stdout.write(f"{number} {response.status_code} eventId={_event_id(response)}\n")
    return 0


def _fill_data_extension(options: argparse.Namespace, subscribers: list[dict[str, str]]) -> None:
    """PUT each subscriber's row into the sandbox's data extension, through its REST API as a tenant's."""
    defaults = SandboxConfig()
    sandbox_url = options.fill_data_extension.rstrip("/")
    with requests.Session() as session:
        answer = session.post(
            f"{sandbox_url}/v2/token",
            timeout=5,
            json={
                "grant_type": "client_credentials",
                "client_id": _credential(options.client_id, "MC_CLIENT_ID", defaults.client_id),
                "client_secret": _credential(options.client_secret, "MC_CLIENT_SECRET", defaults.client_secret),
            },
        )
        answer.raise_for_status()
        session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        primary_key = "SubscriberKey"
        for subscriber in subscribers:
            values = {name: value for name, value in subscriber.items() if name != primary_key}
            answer = session.put(
                f"{sandbox_url}/hub/v1/dataevents/key:{options.de_key}/rows/{primary_key}:{subscriber[primary_key]}",
                json={"values": values},
                timeout=5,
            )
            if answer.status_code != 200:
                # The data extension is strict, as a tenant's: say what it refused (its error, no row values).
                sys.stderr.write(f"the sandbox refused a demo row: {answer.status_code} {answer.text[:300]}\n")


def _event_id(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return "-"
    value = data.get("eventId") if isinstance(data, dict) else None
    return "-" if value is None else str(value)


if __name__ == "__main__":
    sys.exit(main())
