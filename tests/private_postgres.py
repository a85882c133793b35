"""A PostgreSQL and a PgBouncer of a test's own, from Debian's binaries, optionally inside a network namespace.

The server logs every statement it runs, so a test can read what reached it through the pooler
(``session_state_statements``): anything that would outlive a transaction under PgBouncer in
transaction mode is named there.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def _as_postgres(command: list[str]) -> list[str]:
    """initdb, postgres and pgbouncer refuse to run as root: as root, run them as the postgres user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def _in(netns: str | None, command: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *command] if netns else command


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port}")


def scratch_directory(prefix: str) -> Path:
    """A new directory under /tmp (short paths: a socket's must fit in 107 bytes) the postgres user may enter."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def prepare_directory(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    return path


class PrivatePostgres:
    """A PostgreSQL 15 server in ``base``, listening on ``host:port`` (in ``netns`` when given)."""

    def __init__(self, base: Path, host: str, port: int, *, netns: str | None = None, **settings: str) -> None:
        self.base = prepare_directory(base)
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        self.host, self.port, self.netns = host, port, netns
        self.settings = {
            "listen_addresses": host,
            "port": str(port),
            "unix_socket_directories": str(self.base),
            "fsync": "off",  # a test's throwaway data: commits need not reach the disk
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "timezone": "UTC",
            "log_statement": "all",
            "log_line_prefix": "%m [%p] %d ",
            **settings,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivatePostgres:
        made = subprocess.run(
            _as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]),
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if made.returncode:
            raise RuntimeError(f"initdb failed: {made.stderr[-2000:]}")
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 0.0.0.0/0 trust\n")
        options = [f"--{name}={value}" for name, value in self.settings.items()]
        log = self.log.open("ab")
        self.proc = subprocess.Popen(
            _in(self.netns, _as_postgres([str(PG_BIN / "postgres"), "-D", str(self.data), *options])),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while subprocess.run(
            [str(PG_BIN / "pg_isready"), "-q", "-U", "postgres", "-h", self.host, "-p", str(self.port)], check=False
        ).returncode:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)
        return self

    def url(self, database: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", self.url(database), "-c", sql],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout.strip()

    def copy_database(self, source_url: str, database: str) -> None:
        """``database`` here becomes a copy of the database at ``source_url`` (schema and rows)."""
        self.psql(f'CREATE DATABASE "{database}"')
        dump = subprocess.Popen([str(PG_BIN / "pg_dump"), "--no-owner", source_url], stdout=subprocess.PIPE)
        subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", self.url(database)],
            stdin=dump.stdout,
            check=True,
            capture_output=True,
            timeout=300,
        )
        assert dump.wait(60) == 0, "pg_dump failed"

    def log_mark(self) -> int:
        """Where the statement log ends now (what ``log_since`` reads from)."""
        return self.log.stat().st_size

    def log_since(self, mark: int) -> str:
        with self.log.open("rb") as log:
            log.seek(mark)
            return log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: PostgreSQL's smart shutdown; SIGINT would be fast
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


class PgBouncer:
    """Debian's PgBouncer in front of ``server``, in transaction pooling mode, on ``host:port``."""

    def __init__(
        self, base: Path, server: PrivatePostgres, host: str, port: int, *, netns: str | None = None, **settings: str
    ) -> None:
        self.base = prepare_directory(base)
        self.server, self.host, self.port, self.netns = server, host, port, netns
        self.settings = {
            "listen_addr": host,
            "listen_port": str(port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(self.base / "userlist.txt"),
            "pool_mode": "transaction",
            "default_pool_size": "20",
            "max_client_conn": "500",
            "logfile": str(self.base / "pgbouncer.log"),
            "pidfile": str(self.base / "pgbouncer.pid"),
            **settings,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PgBouncer:
        (self.base / "userlist.txt").write_text('"postgres" ""\n')
        ini = self.base / "pgbouncer.ini"
        lines = ["[databases]", f"* = host={self.server.host} port={self.server.port}", "", "[pgbouncer]"]
        lines += [f"{name} = {value}" for name, value in self.settings.items()]
        ini.write_text("\n".join(lines) + "\n")
        for path in (ini, self.base / "userlist.txt"):
            if os.geteuid() == 0:
                shutil.chown(path, "postgres", "postgres")
        self.proc = subprocess.Popen(
            _in(self.netns, _as_postgres([PGBOUNCER, str(ini)])),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.host, self.port)
        return self

    def url(self, database: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def show(self, what: str) -> str:
        """An admin console command (``SHOW POOLS``...), through the ``pgbouncer`` pseudo-database."""
        out = subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-tA", self.url("pgbouncer"), "-c", f"SHOW {what}"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


# What a statement must not do behind PgBouncer in transaction mode: outlive its transaction.
SESSION_STATE = {
    "LISTEN/NOTIFY subscription": re.compile(r"\b(UN)?LISTEN\b", re.IGNORECASE),
    "server-side cursor": re.compile(r"\bDECLARE\b.*\bCURSOR\b", re.IGNORECASE | re.DOTALL),
    "session-level advisory lock": re.compile(r"\bpg_(try_)?advisory_(lock|unlock)(_shared|_all)?\s*\(", re.IGNORECASE),
    "prepared statement": re.compile(r"^\s*(PREPARE|DEALLOCATE)\b", re.IGNORECASE),
    "session setting": re.compile(r"^\s*(SET|RESET)\s+(?!LOCAL\b)|set_config\s*\([^)]*,\s*false\s*\)", re.IGNORECASE),
    "temporary table": re.compile(r"\bCREATE\s+(GLOBAL\s+|LOCAL\s+)?TEMP(ORARY)?\s+TABLE\b", re.IGNORECASE),
}
# "statement: ..." (simple protocol) and "execute <name>: ..." (extended protocol) log lines.
_LOGGED = re.compile(r" LOG:  (?:statement|execute (<unnamed>|[^:]+)): (.*)", re.DOTALL)


def session_state_statements(log_text: str, database: str) -> list[str]:
    """Statements run in ``database`` that keep state beyond their transaction, as '<what>: <statement>'."""
    found: list[str] = []
    # Continuation lines of a multi-line statement start with a tab: glue them to their statement.
    entries = re.split(r"\n(?!\t)", log_text)
    for entry in entries:
        if f" {database} LOG:  " not in entry:
            continue
        match = _LOGGED.search(entry)
        if not match:
            continue
        name, statement = match.group(1), match.group(2)
        if name and name != "<unnamed>":
            found.append(f"named prepared statement {name}: {statement[:120]}")
        for what, pattern in SESSION_STATE.items():
            if pattern.search(statement):
                found.append(f"{what}: {statement[:160]}")
    return found
