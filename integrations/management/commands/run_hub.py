"""``manage.py run_hub`` (what ``make run`` calls): everything up on one machine.

Migrates, makes a local admin (its password printed once), then starts together
the Marketing Cloud sandbox (``python -m sandboxes.marketing_cloud``, a child
process like the others: the hub never imports the emulators), the web server as
deployed (gunicorn behind nginx, with the files in ``deploy/``) and the django-q2
cluster; has the sandbox play the demo subscribers through the real intake endpoint
signed as Journey Builder signs them, registers the hub's ENS callback with the
sandbox, runs ``mc_check`` against it and prints its result, and prints where to
look. Ctrl-C stops every process.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from hub.webserver import NginxMissing, free_port, gunicorn_command, nginx_command
from integrations.choices import EventStatus
from integrations.models import InboundEvent
from integrations.queue import STALL_SECONDS, cluster_stalled

WATCHDOG_INTERVAL = 15.0
# How long the processes get to stop on Ctrl-C before their process groups are killed.
STOP_SECONDS = 15
DEMO_CLIENT_ID = "hub-demo-client"
DEMO_CLIENT_SECRET = "hub-demo-client-secret"  # the sandbox's, not a real tenant's
DEMO_JWT_SECRET = "hub-demo-jwt-signing-secret-for-the-local-sandbox"
# What `python -m sandboxes.marketing_cloud --send-demo` prints for each execute call.
DEMO_CALL_LINE = re.compile(r"^\d+ (?P<status>\d{3}) eventId=(?P<event_id>\S+)$")


def manage_py_command(*args: str) -> str:
    """A ``manage.py`` command line that works as written from the clone while ``make run`` is up.

    Outside production a command needs ``HUB_DEBUG=true`` to reach the embedded database (the
    settings refuse to start without it or a production configuration), and the clone's virtualenv.
    """
    python = os.path.relpath(sys.executable, settings.BASE_DIR)
    if python.startswith(".."):
        python = sys.executable
    prefix = "HUB_DEBUG=true " if settings.DEBUG else ""
    return " ".join([f"{prefix}{shlex.quote(python)}", "manage.py", *map(shlex.quote, args)])


class Command(BaseCommand):
    help = "Run the web server, the task cluster and the Marketing Cloud sandbox together, with demo data."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-demo", action="store_true", help="Do not play the demo subscribers.")
        parser.add_argument("--web-workers", type=int, default=2)

    def handle(self, *args: Any, no_demo: bool, web_workers: int, **options: Any) -> None:
        base_dir = Path(settings.BASE_DIR)
        web_port, sandbox_port = settings.HUB_PORT, settings.MC_SANDBOX_PORT
        use_sandbox = not os.environ.get("MC_AUTH_BASE_URL")
        env = {**os.environ, "DATABASE_URL": settings.EFFECTIVE_DATABASE_URL, "PYTHONUNBUFFERED": "1"}
        env.setdefault("HUB_DEBUG", "true")
        if use_sandbox:
            env.update(
                MC_AUTH_BASE_URL=f"http://127.0.0.1:{sandbox_port}",
                MC_CLIENT_ID=DEMO_CLIENT_ID,
                MC_CLIENT_SECRET=DEMO_CLIENT_SECRET,
                MC_JWT_SECRET=env.get("MC_JWT_SECRET") or DEMO_JWT_SECRET,
            )
            env.pop("MC_REST_BASE_URL", None)
            env.pop("MC_ACCOUNT_ID", None)

        self.stdout.write("Migrating the database ...")
        call_command("migrate", interactive=False, verbosity=0)
        self._ensure_admin()

        python = sys.executable
        sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        commands: list[tuple[str, list[str]]] = []
        # As deployed (README, "Running the processes yourself"): gunicorn with the shipped settings
        # on a loopback port, nginx with the shipped site in front of it on the hub's port.
        gunicorn_bind = f"127.0.0.1:{free_port()}"
        try:
            front = nginx_command(
                Path(settings.DATA_DIR) / "nginx", listen=f"127.0.0.1:{web_port}", upstream=gunicorn_bind
            )
        except NginxMissing as exc:
            raise CommandError(str(exc)) from None
        commands += [
            ("web", gunicorn_command(gunicorn_bind, "--workers", str(web_workers), "--access-logfile", "-")),
            ("front", front),
            ("qcluster", [python, "manage.py", "qcluster"]),
        ]
        processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            if stopping:
                return
            stopping = True
            self.stdout.write("\nStopping ...")
            # SIGTERM to each process's leader only, which stops its own children: django-q2's
            # sentinel keeps SIGTERM's default, so a signal to the whole group killed it while it
            # could hold the cluster's stop event lock, and the qcluster master then waited for that
            # lock until the SIGKILL below, 15 s later. The group is killed only if the leader hangs.
            for _name, proc in processes:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_SECONDS
            for _name, proc in processes:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

        def start(name: str, command: list[str]) -> None:
            # Each in its own process group, so a stop reaches its children (gunicorn and
            # qcluster workers) and Ctrl-C in the terminal reaches only us.
            proc = subprocess.Popen(command, cwd=base_dir, env=env, start_new_session=True)  # noqa: S603 - our own argv
            processes.append((name, proc))

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            if use_sandbox:
                # First, and ready before the hub starts: the hub's settings take the sandbox
                # tenant's All Subscribers list (its ENS events name it), which the sandbox tells.
                start("sandbox", [python, "-m", "sandboxes.marketing_cloud", "--port", str(sandbox_port)])
                self._wait_for(f"{sandbox_url}/__sandbox/health", processes, "sandbox")
                if not env.get("MC_ALL_SUBSCRIBERS_LIST_ID"):
                    tenant = requests.get(f"{sandbox_url}/__sandbox/tenant", timeout=5).json()
                    env["MC_ALL_SUBSCRIBERS_LIST_ID"] = tenant["allSubscribersListId"]
            for name, command in commands:
                start(name, command)
            web_url = f"http://127.0.0.1:{web_port}"
            self._wait_for(f"{web_url}/api/health", processes, "web server")
            if not no_demo and use_sandbox:
                self._play_demo(web_url, env, base_dir, sandbox_url)
            if use_sandbox:
                self._check_tenant(web_url, env, base_dir)
            self.stdout.write(self.style.SUCCESS(f"\nThe hub is up. Admin: {web_url}/admin/  (user admin)"))
            self.stdout.write(f"API schema: {web_url}/api/schema/   Health: {web_url}/api/health")
            if use_sandbox:
                self.stdout.write(
                    f"Marketing Cloud sandbox: {sandbox_url} (rows: /__sandbox/rows/{settings.MC_DE_KEY})"
                )
            self.stdout.write(f"Other commands from this clone, e.g. `{manage_py_command('create_api_key', 'NAME')}`.")
            self.stdout.write("Ctrl-C stops everything.")
            last_check = cluster_started = time.monotonic()
            while not stopping:
                for index, (name, proc) in enumerate(processes):
                    if proc.poll() is not None and not stopping:
                        if name == "qcluster":
                            # It can die with its database (a PostgreSQL restart): start it again.
                            self.stderr.write(f"qcluster exited with {proc.returncode}; starting it again.")
                            cluster_started = time.monotonic()
                            processes[index] = (
                                "qcluster",
                                subprocess.Popen(  # noqa: S603 - our own argv
                                    [python, "manage.py", "qcluster"], cwd=base_dir, env=env, start_new_session=True
                                ),
                            )
                            continue
                        self.stderr.write(f"{name} exited with {proc.returncode}; stopping the rest.")
                        stop()
                        raise CommandError(f"{name} exited unexpectedly")
                if time.monotonic() - last_check > WATCHDOG_INTERVAL:
                    last_check = time.monotonic()
                    # A cluster just (re)started gets as long as a stall takes to show: what its
                    # killed predecessor held comes back only when django-q2's lease ends.
                    if time.monotonic() - cluster_started > STALL_SECONDS and cluster_stalled():
                        # django-q2 can wedge when a worker dies holding its internal queue lock
                        # (django-q2#23): a fresh cluster picks the tasks up again.
                        self.stderr.write("The task cluster stopped taking tasks; restarting it.")
                        index = next(i for i, (name, _) in enumerate(processes) if name == "qcluster")
                        _, old = processes[index]
                        os.killpg(old.pid, signal.SIGKILL)
                        old.wait()
                        cluster_started = time.monotonic()
                        processes[index] = (
                            "qcluster",
                            subprocess.Popen(  # noqa: S603 - our own argv
                                [python, "manage.py", "qcluster"], cwd=base_dir, env=env, start_new_session=True
                            ),
                        )
                time.sleep(0.5)
        finally:
            stop()

    def _ensure_admin(self) -> None:
        user_model = get_user_model()
        if user_model.objects.filter(is_superuser=True).exists():
            self.stdout.write(
                f"Admin user exists (reset its password with `{manage_py_command('changepassword', 'admin')}`)."
            )
            return
        password = secrets.token_urlsafe(12)
        user_model.objects.create_superuser("admin", "", password)
        self.stdout.write(
            self.style.WARNING(f"Created admin user 'admin' with password: {password}  (shown once; keep it)")
        )
        self.stdout.write(f"Reset it with `{manage_py_command('changepassword', 'admin')}`.")

    def _wait_for(self, url: str, processes: list[tuple[str, subprocess.Popen[bytes]]], what: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for name, proc in processes:
                if proc.poll() is not None:
                    raise CommandError(f"{name} exited with {proc.returncode} during start-up")
            try:
                if requests.get(url, timeout=2).status_code < 500:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise CommandError(f"the {what} did not answer at {url} within 60 s")

    def _check_tenant(self, web_url: str, env: dict[str, str], base_dir: Path) -> None:
        """Register the ENS callback with the sandbox, then print what ``mc_check`` finds."""
        python = sys.executable
        # Children get the sandbox's settings through env; this process keeps its own.
        register = [python, "manage.py", "mc_ens_register", f"{web_url}/api/v1/marketing-cloud/ens", "--allow-insecure"]
        registered = subprocess.run(register, cwd=base_dir, env=env, capture_output=True, text=True, timeout=90)  # noqa: S603
        if registered.returncode != 0:
            self.stderr.write(f"ENS registration with the sandbox failed: {registered.stderr.strip()[-300:]}")
        self.stdout.write("\nTenant self-check (manage.py mc_check) against the sandbox:")
        checked = subprocess.run(  # noqa: S603 - our own argv
            [python, "manage.py", "mc_check", "--hub-url", web_url],
            cwd=base_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.stdout.write(checked.stdout.rstrip())
        if checked.returncode != 0:
            self.stderr.write(checked.stderr.strip()[-500:] or "mc_check reported failures (above).")

    def _play_demo(self, web_url: str, env: dict[str, str], base_dir: Path, sandbox_url: str) -> None:
        """Have the sandbox fill its data extension with the demo subscribers and play them as Journey Builder."""
        self.stdout.write(
            "Playing the demo subscribers as Journey Builder (on every start, as the sandbox starts empty; "
            "they find the golden records an earlier start made; --no-demo skips them) ..."
        )
        # Marketing Cloud holds the subscribers in the data extension the journey enters from; the
        # reconciliation poller reads it too. The JWT secret and credentials reach it through env.
        played = subprocess.run(  # noqa: S603 - our own argv
            [
                sys.executable,
                "-m",
                "sandboxes.marketing_cloud",
                "--send-demo",
                f"{web_url}/api/v1/marketing-cloud/journey/execute",
                "--fill-data-extension",
                sandbox_url,
                "--de-key",
                settings.MC_DE_KEY,
            ],
            cwd=base_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if played.stderr.strip():
            self.stderr.write(played.stderr.strip()[-1000:])
        calls = [match for line in played.stdout.splitlines() if (match := DEMO_CALL_LINE.match(line.strip()))]
        event_ids = [call["event_id"] for call in calls if call["status"] == "200" and call["event_id"] != "-"]
        failed = [int(call["status"]) for call in calls if call["status"] != "200"]
        if failed:
            self.stderr.write(f"demo calls refused: {failed}")
        deadline = time.monotonic() + 60
        terminal = {EventStatus.SYNCED, EventStatus.SUPERSEDED, EventStatus.DEAD, EventStatus.REJECTED}
        while time.monotonic() < deadline:
            statuses = list(InboundEvent.objects.filter(pk__in=event_ids).values_list("status", flat=True))
            if len(statuses) == len(event_ids) and all(s in terminal for s in statuses):
                break
            time.sleep(0.3)
        synced = InboundEvent.objects.filter(pk__in=event_ids, status=EventStatus.SYNCED).count()
        rows = requests.get(f"{sandbox_url}/__sandbox/rows/{settings.MC_DE_KEY}", timeout=5).json()
        written = sum(1 for values in rows.values() if values.get(settings.MC_MASTER_ID_FIELD))
        self.stdout.write(
            f"Demo: {len(event_ids)} events accepted, {synced} synced; "
            f"the sandbox holds {written} master IDs written back."
        )
