"""``manage.py mc_check`` against the strict sandbox and a live hub, over real HTTP."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from integrations.marketing_cloud.schema import INDIVIDUAL, DataExtensionField, DataExtensionSchema

pytestmark = pytest.mark.django_db(transaction=True)


def mc_check(hub_url: str) -> tuple[int, list[str]]:
    out = io.StringIO()
    try:
        call_command("mc_check", "--hub-url", hub_url, stdout=out)
        code = 0
    except SystemExit as exit_info:
        code = int(exit_info.code or 0)
    return code, out.getvalue().splitlines()


def line(lines: list[str], name: str) -> str:
    [found] = [text for text in lines if text.split(":", 1)[0].split(None, 1)[-1] == name]
    return found


@pytest.fixture
def registered(live_server, sandbox):
    call_command(
        "mc_ens_register", f"{live_server.url}/api/v1/marketing-cloud/ens", "--allow-insecure", stdout=io.StringIO()
    )


def test_a_tenant_that_fits_passes_every_check(registered, live_server, sandbox, settings):
    # As under `make run`: without DEBUG the activity names https URLs, which the test server does not serve.
    settings.DEBUG = True
    code, lines = mc_check(live_server.url)
    assert code == 0, "\n".join(lines)
    assert lines[-1].startswith("All ") and lines[-1].endswith(" checks passed.")
    for name in ("token", "scopes", "data extension", "primary key", "master ID column", "modified date column"):
        assert line(lines, name).startswith("OK    ")
    assert "GlobalPartyId Text(64)" in line(lines, "master ID column")
    assert "verified" in line(lines, "ENS callback")
    for action in ("execute", "save", "publish", "validate", "stop"):
        assert line(lines, f"activity {action} URL").startswith("OK    ")
    # mc_check reads metadata only: nothing was written to the data extension.
    assert sandbox.count("PUT", "/hub/") == sandbox.count("POST", "/hub/") == 0


def test_a_wrong_data_extension_key_fails_with_the_fix(registered, live_server, sandbox, settings):
    settings.MC_DE_KEY = "Individuals"
    code, lines = mc_check(live_server.url)
    assert code == 1
    assert line(lines, "data extension") == (
        "FAIL  data extension: no data extension has the external key 'Individuals'. Fix: set MC_DE_KEY to the "
        "External Key of the data extension the journey enters from (Email Studio > Subscribers > Data Extensions "
        "> Properties)"
    )
    assert line(lines, "primary key").startswith("FAIL  primary key: not checked")
    assert lines[-1].endswith("checks failed.")


def test_a_wrong_primary_key_or_master_id_field_fails(registered, live_server, sandbox, settings):
    settings.MC_DE_PRIMARY_KEY = "EmailAddress"
    settings.MC_MASTER_ID_FIELD = "MasterId"
    code, lines = mc_check(live_server.url)
    assert code == 1
    assert "the primary key is SubscriberKey, MC_DE_PRIMARY_KEY is 'EmailAddress'" in line(lines, "primary key")
    assert "the data extension has no field 'MasterId'" in line(lines, "master ID column")
    assert "Fix: add a Text(36) field MasterId" in line(lines, "master ID column")


def test_a_master_id_column_too_short_or_of_the_wrong_type_fails(registered, live_server, sandbox):
    fields = tuple(
        DataExtensionField("GlobalPartyId", "Text", 20) if f.name == "GlobalPartyId" else f for f in INDIVIDUAL.fields
    )
    sandbox.declare(DataExtensionSchema(INDIVIDUAL.key, INDIVIDUAL.name, fields))
    code, lines = mc_check(live_server.url)
    assert code == 1
    assert line(lines, "master ID column").startswith("FAIL  master ID column: GlobalPartyId is Text(20). Fix:")
    fields = tuple(DataExtensionField("ModifiedDate", "Text", 30) if f.name == "ModifiedDate" else f for f in fields)
    sandbox.declare(DataExtensionSchema(INDIVIDUAL.key, INDIVIDUAL.name, fields))
    assert "ModifiedDate is of type Text" in line(mc_check(live_server.url)[1], "modified date column")


def test_missing_scopes_and_an_unregistered_callback_fail(live_server, sandbox):
    sandbox.configure(scope="data_extensions_read data_extensions_write")
    code, lines = mc_check(live_server.url)
    assert code == 1
    assert "the token lacks event_notification_callback_create" in line(lines, "scopes")
    assert line(lines, "ENS callback").startswith(
        "FAIL  ENS callback: none is registered. Fix: run `manage.py mc_ens_register"
    )


def test_bad_credentials_fail_the_token_and_everything_that_needs_it(live_server, sandbox, settings):
    settings.MC_CLIENT_SECRET = "wrong"
    code, lines = mc_check(live_server.url)
    assert code == 1
    assert "token request refused with 401" in line(lines, "token")
    assert line(lines, "data extension") == "FAIL  data extension: not checked: no token. Fix: fix the token first"


def test_an_unreachable_activity_fails(registered, sandbox):
    code, lines = mc_check("http://127.0.0.1:9")
    assert code == 1
    assert line(lines, "activity config.json").startswith("FAIL  activity config.json: http://127.0.0.1:9/")


def test_without_debug_activity_urls_must_be_https(registered, sandbox):
    # An activity endpoint behind a proxy that names http URLs: Journey Builder would not call them.
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Activity(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            base = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/marketing-cloud/journey"
            body = json.dumps({"arguments": {"execute": {"url": f"{base}/execute"}}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Activity)
    Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        code, lines = mc_check(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert code == 1
    assert "is not https. Fix: serve the hub over HTTPS" in line(lines, "activity execute URL")
