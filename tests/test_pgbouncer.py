"""The hub behind PgBouncer in transaction mode (HUB_DATABASE_POOLER=pgbouncer): intake, two resolvers
at once, the write-back, a downstream round and the invariant checks all go through Debian's
pgbouncer, and the server's statement log shows nothing that would outlive a transaction.

A PostgreSQL of the test's own (it logs every statement), holding a copy of the test database.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import processes
from tests.conftest import CLIENT_ID, CLIENT_SECRET, JWT_SECRET
from tests.private_postgres import PGBOUNCER, PgBouncer, PrivatePostgres, scratch_directory, session_state_statements
from tests.processes import ROOT, free_port

# Starts a PostgreSQL and a PgBouncer; the test database (migrated, defaults seeded) is what it copies.
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EVENTS = 30


def test_the_hub_through_pgbouncer_in_transaction_mode_keeps_no_session_state(sandbox):
    if not Path(PGBOUNCER).exists():
        pytest.fail("Debian's pgbouncer is not installed: `make pgbouncer` (or apt-get install pgbouncer)")
    base = scratch_directory("hub-pgb-")
    server = PrivatePostgres(base / "pg", "127.0.0.1", free_port())
    bouncer = PgBouncer(base / "bouncer", server, "127.0.0.1", free_port(), default_pool_size="4")
    try:
        server.start()
        server.copy_database(processes.test_database_url(), "hub")
        mark = server.log_mark()  # the hub's statements from here on (the copy sets what pg_dump sets)
        bouncer.start()
        env = {
            **os.environ,
            "DATABASE_URL": bouncer.url("hub"),
            "HUB_DATABASE_POOLER": "pgbouncer",
            "HUB_DEBUG": "true",
            "HUB_LOG_LEVEL": "WARNING",
            "MC_AUTH_BASE_URL": sandbox.url,
            "MC_CLIENT_ID": CLIENT_ID,
            "MC_CLIENT_SECRET": CLIENT_SECRET,
            "MC_JWT_SECRET": JWT_SECRET,
            "MC_HTTP_TIMEOUT": "3",
        }
        env.pop("HUB_TESTING", None)
        done = subprocess.run(
            [
                sys.executable,
                "manage.py",
                "shell",
                "-c",
                f"from tests.pooler_workload import main; main({EVENTS})",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(seen, indent=2))
        assert sorted(seen["stored"]) == [str(EVENTS // 2), str(EVENTS - EVENTS // 2)]
        assert seen["statuses"] == ["synced"] and seen["golden_records"] == EVENTS
        assert "All checked invariants hold." in seen["invariants"]
        # The second round found the lease given back by the first (none is left held).
        assert "another sender is busy" not in " ".join(seen["delivered"]), seen["delivered"]
        rows = sandbox.rows("Individual")
        assert len(rows) == EVENTS and all(row.get("GlobalPartyId") for row in rows.values())
        # Both client connections' transactions really were pooled: more than one server connection served them.
        logged = server.log_since(mark)
        backends = set(re.findall(r"\[(\d+)\] hub LOG:  ", logged))
        assert len(backends) >= 2, backends
        found = session_state_statements(logged, "hub")
        assert found == [], "\n".join(found[:20])
    finally:
        bouncer.stop()
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
