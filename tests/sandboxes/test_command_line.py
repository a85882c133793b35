"""The emulators run as programs: ``python -m sandboxes.marketing_cloud`` and ``python -m sandboxes.salesforce``.

``make run`` starts the Marketing Cloud one this way and has it play the demo, so these run them as
child processes, over real HTTP, as ``manage.py run_hub`` does.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from integrations.models import InboundEvent
from tests.conftest import CLIENT_ID, CLIENT_SECRET, JWT_SECRET

ROOT = Path(__file__).resolve().parent.parent.parent


@contextmanager
def serving(module: str, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``python -m module --port 0 ...`` and yield the URL its first line names; stop it by its PID."""
    proc = subprocess.Popen(  # noqa: S603 - our own argv
        [sys.executable, "-m", module, "--port", "0", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the emulator printed nothing within 30 s"
        line = proc.stdout.readline().strip()
        assert " listening on http://127.0.0.1:" in line, line + proc.stderr.read()
        yield line.rsplit(" ", 1)[-1]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_the_marketing_cloud_emulator_serves_with_the_hubs_credentials_and_tells_its_tenant():
    with serving(
        "sandboxes.marketing_cloud", env={"MC_CLIENT_ID": "from-env", "MC_CLIENT_SECRET": "env-secret"}
    ) as url:
        assert requests.get(f"{url}/__sandbox/health", timeout=5).json() == {"ok": True}
        assert requests.get(f"{url}/__sandbox/tenant", timeout=5).json() == {"allSubscribersListId": "10001"}
        grant = {"grant_type": "client_credentials", "client_id": "from-env"}
        assert requests.post(f"{url}/v2/token", json={**grant, "client_secret": "env-secret"}, timeout=5).ok
        assert requests.post(f"{url}/v2/token", json={**grant, "client_secret": "other"}, timeout=5).status_code == 401


def test_the_salesforce_emulator_serves():
    with serving("sandboxes.salesforce") as url:
        assert requests.get(f"{url}/__sandbox/health", timeout=5).json() == {"ok": True}


@pytest.mark.django_db(transaction=True)
def test_send_demo_fills_the_data_extension_and_plays_journey_builder_to_the_hub(journey, sandbox):
    played = subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-m", "sandboxes.marketing_cloud", "--send-demo", journey.url, "--count", "2",
         "--fill-data-extension", sandbox.url],
        cwd=ROOT,
        env={**os.environ, "MC_CLIENT_ID": CLIENT_ID, "MC_CLIENT_SECRET": CLIENT_SECRET, "MC_JWT_SECRET": JWT_SECRET},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert played.returncode == 0, played.stderr
    lines = played.stdout.strip().splitlines()
    assert [line.split(" ", 2)[:2] for line in lines] == [["1", "200"], ["2", "200"]]
    event_ids = {int(line.rsplit("eventId=", 1)[1]) for line in lines}
    assert set(InboundEvent.objects.values_list("pk", flat=True)) == event_ids
    assert sorted(sandbox.rows("Individual")) == ["SK-DEMO-0001", "SK-DEMO-0002"]
    assert played.stderr == ""


def test_send_demo_without_a_jwt_secret_says_so():
    env = {k: v for k, v in os.environ.items() if k != "MC_JWT_SECRET"}
    played = subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-m", "sandboxes.marketing_cloud", "--send-demo", "http://127.0.0.1:9/execute"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert played.returncode == 2 and "No JWT signing secret" in played.stderr
