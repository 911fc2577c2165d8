"""Static checks of the deployment files: docker-compose.yml, Dockerfile,
.dockerignore, .env.example, the pm2 ecosystem file and the systemd units.

They need no running services. Where a real tool can judge a file
(`docker compose config`, `systemd-analyze verify`, `node`), it is used; a test
is skipped only when that tool is not installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from orderbot.config.settings import Settings, parse_duration

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENV_EXAMPLE = REPO / ".env.example"
PM2_FILE = REPO / "deploy" / "pm2" / "ecosystem.config.js"
SYSTEMD_DIR = REPO / "deploy" / "systemd"

# The processes drain in-flight work within SHUTDOWN_TIMEOUT of SIGTERM; every
# supervisor must wait longer than this before it kills.
SHUTDOWN_TIMEOUT = Settings.model_fields["shutdown_timeout"].default
assert isinstance(SHUTDOWN_TIMEOUT, timedelta)

SETTING_NAMES = frozenset(name.upper() for name in Settings.model_fields)

# Supervisors wait this much longer than the drain before they kill: closing the
# connections and the last log lines come after SHUTDOWN_TIMEOUT.
STOP_MARGIN = timedelta(seconds=15)

# The per-process metrics ports of the pm2 and systemd deployments (one host, one
# network namespace): a range of their own, away from node_exporter's 9100.
OUTBOX_METRICS_PORT = 9811
FIRST_WORKER_METRICS_PORT = 9821
METRICS_PORT_RANGE = range(9800, 9900)
NODE_EXPORTER_PORT = 9100

# The worst `systemd-analyze security` exposure a unit may have (up to 2.5 is "OK").
MAX_EXPOSURE = 2.5

INFRA_SERVICES = ("rabbitmq", "redis", "postgres")
LONG_RUNNING_APPS = ("server", "worker", "outbox-worker")
APP_SERVICES = ("migrate", *LONG_RUNNING_APPS)

# systemd unit file -> the `orderbot` subcommand it must start
SYSTEMD_SERVICES = {
    "orderbot-server.service": "server",
    "orderbot-worker@.service": "worker",
    "orderbot-outbox-worker.service": "outbox-worker",
}

# pm2 app name -> the `orderbot` subcommand it must start
PM2_APPS = {
    "orderbot-server": "server",
    "orderbot-worker": "worker",
    "orderbot-outbox-worker": "outbox-worker",
}


# --- helpers --------------------------------------------------------------------


_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)")
_GO_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def compose_duration(value: str) -> timedelta:
    """Parse a compose duration such as `30s` or `1m30s`."""
    parts = _GO_DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a compose duration: {value!r}")
    return timedelta(seconds=sum(float(n) * _GO_UNIT_SECONDS[u] for n, u in parts))


def systemd_seconds(value: str) -> timedelta:
    """Parse a systemd time span as used here: `30`, `30s`, `1min 30s`."""
    units = {"": 1.0, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "ms": 1e-3}
    total = 0.0
    for token in value.split():
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*)", token)
        assert match is not None, f"unexpected time span {value!r}"
        assert match.group(2) in units, f"unexpected unit in {value!r}"
        total += float(match.group(1)) * units[match.group(2)]
    return timedelta(seconds=total)


def command_words(command: str | list[str]) -> list[str]:
    return command.split() if isinstance(command, str) else list(command)


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Read a systemd unit into section -> key -> every value, in order.

    configparser (even with strict=False) keeps only the last of repeated keys,
    and units repeat keys on purpose (`Environment=` twice), so this keeps all.
    """
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}:{number}: key outside a section"
        assert "=" in line, f"{path.name}:{number}: not KEY=value: {line!r}"
        key, value = (part.strip() for part in line.split("=", 1))
        current.setdefault(key, []).append(value)
    return sections


def unit_value(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert values, f"[{section}] {key}= is missing"
    return values[-1]


def unit_environment(unit: dict[str, dict[str, list[str]]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in unit.get("Service", {}).get("Environment", []):
        for assignment in line.split():
            key, value = assignment.strip('"').split("=", 1)
            env[key] = value
    return env


def env_example_lines() -> list[str]:
    return ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()


def env_example_assignments() -> dict[str, str]:
    """The active (uncommented) KEY=value lines of .env.example."""
    pairs = (
        line.split("=", 1)
        for line in env_example_lines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {key: value for key, value in pairs}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    instructions = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def docker_compose_cli() -> list[str] | None:
    """The compose CLI (`docker compose` plugin or standalone), or None."""
    candidates: list[list[str]] = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for cli in candidates:
        probe = subprocess.run([*cli, "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return cli
    return None


# --- fixtures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    result = compose["services"]
    assert isinstance(result, dict)
    return result


# What in the environment pm2 is started with changes the ecosystem file's apps.
PM2_FILE_INPUTS = (
    "ORDERBOT_BIN",
    "ORDERBOT_USER",
    "PM2_LOG_DIR",
    "WORKER_METRICS_PORT",
    "OUTBOX_METRICS_PORT",
    "HTTP_PORT",
)


def evaluate_pm2_file(**env: str) -> dict[str, dict[str, Any]]:
    """The apps of the ecosystem file as pm2 sees them, started with `env` (and none of
    PM2_FILE_INPUTS from this process's environment)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: cannot evaluate the pm2 ecosystem file")
    script = f"const c = require({json.dumps(str(PM2_FILE))}); console.log(JSON.stringify(c));"
    clean = {k: v for k, v in os.environ.items() if k not in PM2_FILE_INPUTS}
    done = subprocess.run(
        [node, "-e", script], capture_output=True, text=True, check=False, env={**clean, **env}
    )
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    return {app["name"]: app for app in config["apps"]}


@pytest.fixture(scope="module")
def pm2_apps() -> dict[str, dict[str, Any]]:
    return evaluate_pm2_file()


# --- docker-compose.yml -----------------------------------------------------------


def test_compose_defines_the_six_services(services: dict[str, Any]) -> None:
    assert set(services) == {*INFRA_SERVICES, *APP_SERVICES}


def test_compose_shared_environment_is_a_yaml_anchor(compose: dict[str, Any]) -> None:
    raw = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "x-orderbot-env: &orderbot-env" in raw
    assert raw.count("*orderbot-env") >= len(APP_SERVICES)
    assert isinstance(compose["x-orderbot-env"], dict)


def test_rabbitmq_is_3_13_or_newer_with_the_management_ui(services: dict[str, Any]) -> None:
    image = services["rabbitmq"]["image"]
    name, _, tag = image.partition(":")
    version = re.match(r"(\d+)\.(\d+)", tag)
    assert name == "rabbitmq"
    assert version is not None, f"pin a version: {image}"
    assert (int(version.group(1)), int(version.group(2))) >= (3, 13)
    assert "management" in tag
    published = {str(port).rsplit(":", 1)[-1] for port in services["rabbitmq"]["ports"]}
    assert {"5672", "15672"} <= published


@pytest.mark.parametrize(
    ("service", "probe"),
    [
        ("rabbitmq", ["rabbitmq-diagnostics", "-q", "ping"]),
        ("redis", ["redis-cli", "ping"]),
        ("postgres", ["pg_isready"]),
    ],
)
def test_infrastructure_services_have_healthchecks(
    services: dict[str, Any], service: str, probe: list[str]
) -> None:
    test = command_words(services[service]["healthcheck"]["test"])
    assert test[0] in {"CMD", "CMD-SHELL"}
    assert test[1 : 1 + len(probe)] == probe


@pytest.mark.parametrize(
    ("service", "data_dir"),
    [
        ("rabbitmq", "/var/lib/rabbitmq"),
        ("redis", "/data"),
        ("postgres", "/var/lib/postgresql/data"),
    ],
)
def test_infrastructure_services_keep_data_in_named_volumes(
    compose: dict[str, Any], services: dict[str, Any], service: str, data_dir: str
) -> None:
    mounts = [str(v).split(":") for v in services[service]["volumes"]]
    named = [source for source, target, *_ in mounts if target == data_dir]
    assert named, f"{service}: nothing mounted on {data_dir}"
    assert named[0] in compose["volumes"]


def test_rabbitmq_has_a_fixed_hostname_so_its_data_survives_recreation(
    services: dict[str, Any],
) -> None:
    assert services["rabbitmq"]["hostname"] == "rabbitmq"


def test_redis_runs_with_appendonly_yes(services: dict[str, Any]) -> None:
    words = command_words(services["redis"]["command"])
    assert words[0] == "redis-server"
    assert words[words.index("--appendonly") + 1] == "yes"


def test_postgres_mounts_schema_sql_into_initdb(services: dict[str, Any]) -> None:
    mounts = [str(v).split(":") for v in services["postgres"]["volumes"]]
    targets = {source: target for source, target, *_ in mounts}
    target = targets.get("./schema.sql", "")
    assert target.startswith("/docker-entrypoint-initdb.d/")
    assert target.endswith(".sql")
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "orderbot"


def test_schema_sql_mounted_into_postgres_exists() -> None:
    # A missing source makes Docker create an empty *directory* in its place.
    assert (REPO / "schema.sql").is_file()


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_build_the_local_image(services: dict[str, Any], service: str) -> None:
    assert services[service]["build"] == "."
    assert services[service]["image"] == "orderbot:local"


@pytest.mark.parametrize(
    ("service", "subcommand"),
    [
        ("migrate", "migrate"),
        ("server", "server"),
        ("worker", "worker"),
        ("outbox-worker", "outbox-worker"),
    ],
)
def test_app_services_run_their_orderbot_subcommand(
    services: dict[str, Any], service: str, subcommand: str
) -> None:
    assert command_words(services[service]["command"]) == ["orderbot", subcommand]


def test_migrate_runs_once_after_postgres_is_healthy(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("service", LONG_RUNNING_APPS)
def test_app_services_start_after_healthy_infrastructure_and_migration(
    services: dict[str, Any], service: str
) -> None:
    conditions = {
        name: dependency["condition"]
        for name, dependency in services[service]["depends_on"].items()
    }
    assert conditions == {
        "rabbitmq": "service_healthy",
        "redis": "service_healthy",
        "postgres": "service_healthy",
        "migrate": "service_completed_successfully",
    }


def test_service_healthy_conditions_name_services_with_healthchecks(
    services: dict[str, Any],
) -> None:
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} -> {dependency}"


def test_migrate_is_not_waited_for_as_healthy(services: dict[str, Any]) -> None:
    # A one-shot container never becomes healthy; waiting for that would hang.
    for name, service in services.items():
        spec = service.get("depends_on", {}).get("migrate")
        if spec is not None:
            assert spec["condition"] == "service_completed_successfully", name


@pytest.mark.parametrize(
    ("service", "port"), [("server", 8080), ("worker", 9101), ("outbox-worker", 9102)]
)
def test_app_services_healthcheck_probes_their_own_health_endpoint(
    services: dict[str, Any], service: str, port: int
) -> None:
    test = command_words(services[service]["healthcheck"]["test"])
    assert test[:3] == ["CMD", "python", "-c"]
    assert f"http://127.0.0.1:{port}/health'" in test[3]
    env = environment_of(services[service])
    listening = env.get("METRICS_PORT") if service != "server" else env.get("HTTP_PORT")
    assert listening == str(port)


@pytest.mark.parametrize("service", LONG_RUNNING_APPS)
def test_stop_grace_period_exceeds_shutdown_timeout(services: dict[str, Any], service: str) -> None:
    grace = compose_duration(services[service]["stop_grace_period"])
    shutdown = parse_duration(environment_of(services[service])["SHUTDOWN_TIMEOUT"])
    assert shutdown <= SHUTDOWN_TIMEOUT
    assert grace > shutdown


@pytest.mark.parametrize("service", [*INFRA_SERVICES, *LONG_RUNNING_APPS])
def test_long_running_services_restart_unless_stopped(
    services: dict[str, Any], service: str
) -> None:
    assert services[service]["restart"] == "unless-stopped"


def test_worker_runs_two_replicas_without_fixed_ports_or_name(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert "ports" not in worker
    assert "container_name" not in worker


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_connect_to_the_compose_service_hostnames(
    services: dict[str, Any], service: str
) -> None:
    env = environment_of(services[service])
    assert urlsplit(env["AMQP_URL"]).hostname == "rabbitmq"
    assert urlsplit(env["REDIS_URL"]).hostname == "redis"
    database = urlsplit(env["DATABASE_URL"])
    assert database.hostname == "postgres"
    assert database.path == "/orderbot"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_set_only_known_settings(services: dict[str, Any], service: str) -> None:
    assert set(environment_of(services[service])) <= SETTING_NAMES


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_read_an_optional_env_file(services: dict[str, Any], service: str) -> None:
    assert services[service]["env_file"] == [{"path": ".env", "required": False}]


def test_docker_compose_config_accepts_the_file() -> None:
    cli = docker_compose_cli()
    if cli is None:
        pytest.skip("docker compose CLI (plugin or docker-compose) is not installed")
    done = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


# --- Dockerfile and .dockerignore ---------------------------------------------------


def test_dockerfile_builds_on_python_3_11_slim() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    bases = [args.split()[0] for word, args in dockerfile_instructions() if word == "FROM"]
    assert bases
    assert all(base == "${PYTHON_IMAGE}" for base in bases)


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [args for word, args in dockerfile_instructions() if word == "USER"]
    assert users, "no USER instruction: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_dockerfile_healthcheck_probes_health_with_urllib() -> None:
    checks = [args for word, args in dockerfile_instructions() if word == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "urllib.request" in checks[0]
    assert "/health" in checks[0]
    assert "curl" not in checks[0]


def test_dockerfile_default_command_is_orderbot_server() -> None:
    commands = [args for word, args in dockerfile_instructions() if word == "CMD"]
    assert json.loads(commands[-1]) == ["orderbot", "server"]


def test_dockerfile_exposes_the_http_and_metrics_ports() -> None:
    exposed = {
        port
        for word, args in dockerfile_instructions()
        if word == "EXPOSE"
        for port in args.split()
    }
    assert exposed == {"8080", "9101", "9102"}


def test_dockerfile_keeps_python_output_unbuffered() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"PYTHONUNBUFFERED=1", text)


def test_dockerfile_installs_the_repository_and_keeps_schema_sql_reachable() -> None:
    instructions = dockerfile_instructions()
    assert ("RUN", "pip install /app") in instructions
    workdirs = [args for word, args in instructions if word == "WORKDIR"]
    assert workdirs[-1] == "/app"


def test_dockerignore_excludes_local_state_and_secrets() -> None:
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", ".env", "**/__pycache__", "**/.pytest_cache"} <= patterns
    assert any(pattern.startswith("bench/") for pattern in patterns)


def test_dockerignore_keeps_what_the_build_needs() -> None:
    patterns = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    for needed in ("pyproject.toml", "README.md", "schema.sql", "orderbot", "*.sql", "*.md"):
        assert needed not in patterns


# --- .env.example -------------------------------------------------------------------


def test_env_example_mentions_every_setting() -> None:
    mentioned = {
        match.group(1)
        for line in env_example_lines()
        if (match := re.match(r"^#?\s?([A-Z][A-Z0-9_]*)=", line))
    }
    assert SETTING_NAMES - mentioned == set()


def test_env_example_sets_only_known_settings() -> None:
    assert set(env_example_assignments()) - SETTING_NAMES == set()


def test_env_example_values_are_accepted_by_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=ENV_EXAMPLE)
    assert settings.shutdown_timeout == SHUTDOWN_TIMEOUT


def test_env_example_is_dev_friendly() -> None:
    values = env_example_assignments()
    assert values["CHAT2DESK_WEBHOOK_TOKEN"] == "dev-webhook-token"
    assert values["CHAT2DESK_API_TOKEN"] == "change-me"
    assert values["LOG_FORMAT"] == "console"


def test_env_example_leaves_metrics_port_unset() -> None:
    # Set in a shared env file it would override the per-process ports of
    # pm2 and the systemd worker template, and the workers would collide.
    assert "METRICS_PORT" not in env_example_assignments()


@pytest.mark.parametrize("unit_name", SYSTEMD_SERVICES)
def test_env_example_sets_nothing_a_systemd_unit_sets_itself(unit_name: str) -> None:
    # Copied to the units' EnvironmentFile, it would override their Environment= lines:
    # every worker instance would take the same WORKER_METRICS_PORT.
    own = set(unit_environment(read_unit(SYSTEMD_DIR / unit_name)))
    assert own & set(env_example_assignments()) == set()


def test_env_example_is_readable_as_a_systemd_environment_file() -> None:
    # systemd keeps a trailing "# comment" and surrounding spaces in the value.
    for line in env_example_lines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*=[^\s#\"']*", line), line


# --- systemd --------------------------------------------------------------------------


@pytest.mark.parametrize("unit_name", SYSTEMD_SERVICES)
def test_systemd_services_restart_on_failure(unit_name: str) -> None:
    unit = read_unit(SYSTEMD_DIR / unit_name)
    assert unit_value(unit, "Service", "Restart") == "on-failure"
    assert systemd_seconds(unit_value(unit, "Service", "RestartSec")) > timedelta(0)


@pytest.mark.parametrize("unit_name", SYSTEMD_SERVICES)
def test_systemd_stop_timeout_exceeds_shutdown_timeout(unit_name: str) -> None:
    unit = read_unit(SYSTEMD_DIR / unit_name)
    timeout = systemd_seconds(unit_value(unit, "Service", "TimeoutStopSec"))
    assert timeout >= SHUTDOWN_TIMEOUT + STOP_MARGIN


@pytest.mark.parametrize(("unit_name", "subcommand"), SYSTEMD_SERVICES.items())
def test_systemd_services_exec_start_their_subcommand(unit_name: str, subcommand: str) -> None:
    unit = read_unit(SYSTEMD_DIR / unit_name)
    exec_start = unit["Service"]["ExecStart"]
    assert exec_start == [f"/opt/orderbot/.venv/bin/orderbot {subcommand}"]


@pytest.mark.parametrize("unit_name", SYSTEMD_SERVICES)
def test_systemd_stop_sends_sigterm_to_the_main_process_first(unit_name: str) -> None:
    unit = read_unit(SYSTEMD_DIR / unit_name)
    assert unit_value(unit, "Service", "Type") == "exec"
    assert unit_value(unit, "Service", "KillSignal") == "SIGTERM"
    assert unit_value(unit, "Service", "KillMode") == "mixed"


@pytest.mark.parametrize("unit_name", SYSTEMD_SERVICES)
def test_systemd_services_run_as_the_orderbot_user(unit_name: str) -> None:
    unit = read_unit(SYSTEMD_DIR / unit_name)
    assert unit_value(unit, "Service", "User") == "orderbot"
    assert unit_value(unit, "Service", "WorkingDirectory") == "/opt/orderbot"
    assert unit_value(unit, "Service", "EnvironmentFile") == "/etc/orderbot/orderbot.env"


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "PrivateMounts": "yes",
    "PrivateUsers": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "SystemCallArchitectures": "native",
    "ProtectClock": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectControlGroups": "yes",
    "ProtectHostname": "yes",
    "ProtectProc": "invisible",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "UMask": "0077",
    "StateDirectory": "orderbot",
}


@pytest.mark.parametrize("unit_name", SYSTEMD_SERVICES)
@pytest.mark.parametrize(("key", "value"), HARDENING.items())
def test_systemd_services_are_hardened(unit_name: str, key: str, value: str) -> None:
    service = read_unit(SYSTEMD_DIR / unit_name)["Service"]
    assert service.get(key) == [value]


@pytest.mark.parametrize("unit_name", SYSTEMD_SERVICES)
def test_systemd_services_filter_system_calls(unit_name: str) -> None:
    service = read_unit(SYSTEMD_DIR / unit_name)["Service"]
    assert service["SystemCallFilter"][0] == "@system-service"
    assert "~@privileged" in service["SystemCallFilter"][1:]
    assert service["SystemCallErrorNumber"] == ["EPERM"]


def test_systemd_install_steps_build_the_venv_from_the_system_python() -> None:
    # ProtectHome=yes hides /home and /root: a venv there, or one built from a
    # Python there, fails with 203/EXEC.
    text = (SYSTEMD_DIR / "orderbot.target").read_text(encoding="utf-8")
    assert "/usr/bin/python3 -m venv .venv" in text
    assert "cd /opt/orderbot" in text
    assert "203/EXEC" in text


@pytest.mark.parametrize("unit_name", SYSTEMD_SERVICES)
def test_systemd_services_belong_to_orderbot_target(unit_name: str) -> None:
    unit = read_unit(SYSTEMD_DIR / unit_name)
    assert unit_value(unit, "Unit", "PartOf") == "orderbot.target"
    assert unit_value(unit, "Install", "WantedBy") == "orderbot.target"
    assert "network-online.target" in unit_value(unit, "Unit", "After").split()
    assert "network-online.target" in unit_value(unit, "Unit", "Wants").split()


def test_orderbot_target_is_wanted_by_multi_user_target() -> None:
    unit = read_unit(SYSTEMD_DIR / "orderbot.target")
    assert unit_value(unit, "Install", "WantedBy") == "multi-user.target"


def test_worker_template_instance_name_is_its_metrics_port() -> None:
    unit = read_unit(SYSTEMD_DIR / "orderbot-worker@.service")
    assert unit_environment(unit)["WORKER_METRICS_PORT"] == "%i"
    assert unit_value(unit, "Install", "DefaultInstance") == str(FIRST_WORKER_METRICS_PORT)


def test_systemd_outbox_worker_port_is_below_the_worker_ports() -> None:
    unit = read_unit(SYSTEMD_DIR / "orderbot-outbox-worker.service")
    port = int(unit_environment(unit)["OUTBOX_METRICS_PORT"])
    assert port == OUTBOX_METRICS_PORT
    assert port < FIRST_WORKER_METRICS_PORT
    assert port in METRICS_PORT_RANGE


@pytest.mark.parametrize("unit_name", SYSTEMD_SERVICES)
def test_systemd_units_set_no_shared_metrics_port(unit_name: str) -> None:
    # One METRICS_PORT for every role is what made two workers collide.
    assert "METRICS_PORT" not in unit_environment(read_unit(SYSTEMD_DIR / unit_name))


def test_systemd_metrics_ports_are_in_their_range_away_from_node_exporter() -> None:
    worker = read_unit(SYSTEMD_DIR / "orderbot-worker@.service")
    outbox = read_unit(SYSTEMD_DIR / "orderbot-outbox-worker.service")
    ports = {
        int(unit_value(worker, "Install", "DefaultInstance")),
        int(unit_environment(outbox)["OUTBOX_METRICS_PORT"]),
    }
    assert NODE_EXPORTER_PORT not in ports
    assert all(port in METRICS_PORT_RANGE for port in ports)


def systemd_exposure(analyze: str, unit: Path) -> tuple[float, str]:
    done = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    output = done.stdout + done.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) (\w+)", output)
    assert match is not None, output
    return float(match.group(1)), match.group(2)


@pytest.mark.parametrize("unit_name", [*SYSTEMD_SERVICES, "orderbot-worker@9821.service"])
def test_systemd_analyze_security_rates_every_unit_ok(tmp_path: Path, unit_name: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    for unit in SYSTEMD_DIR.iterdir():
        shutil.copy(unit, tmp_path / unit.name)
    (tmp_path / "orderbot-worker@9821.service").symlink_to("orderbot-worker@.service")
    exposure, verdict = systemd_exposure(analyze, tmp_path / unit_name)
    assert exposure <= MAX_EXPOSURE, f"{unit_name}: {exposure} {verdict}"
    assert verdict == "OK"


def test_systemd_analyze_verify_finds_no_syntax_errors(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    for unit in SYSTEMD_DIR.iterdir():
        shutil.copy(unit, tmp_path / unit.name)
    # An instance of the template, as `systemctl start orderbot-worker@9821` loads it.
    (tmp_path / "orderbot-worker@9821.service").symlink_to("orderbot-worker@.service")
    units = sorted(str(path) for path in tmp_path.iterdir())
    done = subprocess.run(
        [analyze, "verify", *units], capture_output=True, text=True, check=False, timeout=60
    )
    output = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    # Parse problems (unknown key, bad value, missing '=') name file and line.
    syntax = [line for line in output if re.search(r"\.(service|target):\d+: ", line)]
    assert syntax == []
    # Beyond syntax, verify checks this host: the only complaint allowed is the
    # venv that exists on a deployed host but not here.
    host_specific = "Command /opt/orderbot/.venv/bin/orderbot is not executable"
    assert [line for line in output if host_specific not in line] == []


# --- pm2 --------------------------------------------------------------------------------


def test_pm2_defines_the_three_apps(pm2_apps: dict[str, dict[str, Any]]) -> None:
    assert set(pm2_apps) == set(PM2_APPS)


@pytest.mark.parametrize(("app_name", "subcommand"), PM2_APPS.items())
def test_pm2_apps_run_the_orderbot_console_script(
    pm2_apps: dict[str, dict[str, Any]], app_name: str, subcommand: str
) -> None:
    app = pm2_apps[app_name]
    assert Path(app["script"]).name == "orderbot"
    assert app["interpreter"] == "none"
    assert app["args"] == subcommand


@pytest.mark.parametrize("app_name", PM2_APPS)
def test_pm2_kill_timeout_exceeds_shutdown_timeout(
    pm2_apps: dict[str, dict[str, Any]], app_name: str
) -> None:
    app = pm2_apps[app_name]
    shutdown = parse_duration(app["env"]["SHUTDOWN_TIMEOUT"])
    assert shutdown <= SHUTDOWN_TIMEOUT
    assert timedelta(milliseconds=app["kill_timeout"]) >= shutdown + STOP_MARGIN


@pytest.mark.parametrize("app_name", PM2_APPS)
def test_pm2_stops_with_sigterm(pm2_apps: dict[str, dict[str, Any]], app_name: str) -> None:
    # pm2's default is SIGINT; the processes drain on both, but the file says SIGTERM.
    assert pm2_apps[app_name]["kill_signal"] == "SIGTERM"


@pytest.mark.parametrize("app_name", PM2_APPS)
def test_pm2_keeps_the_json_log_lines_whole(
    pm2_apps: dict[str, dict[str, Any]], app_name: str
) -> None:
    app = pm2_apps[app_name]
    # A date prefix turns a JSON line into something no log shipper parses.
    assert app["time"] is False
    assert "log_date_format" not in app
    # One file per instance, so a line still says which process wrote it.
    assert app["merge_logs"] is False
    assert "combine_logs" not in app


def test_pm2_log_files_go_where_pm2_log_dir_says() -> None:
    apps = evaluate_pm2_file(PM2_LOG_DIR="/var/log/orderbot")
    for name, app in apps.items():
        assert app["out_file"] == f"/var/log/orderbot/{name}-out.log"
        assert app["error_file"] == f"/var/log/orderbot/{name}-error.log"


def test_pm2_can_run_the_apps_as_a_user_of_their_own() -> None:
    apps = evaluate_pm2_file(ORDERBOT_USER="orderbot")
    for app in apps.values():
        assert (app["uid"], app["gid"]) == ("orderbot", "orderbot")
    text = PM2_FILE.read_text(encoding="utf-8")
    assert "useradd --system" in text
    assert "pm2 startup systemd -u orderbot" in text


def test_pm2_runs_as_the_starting_user_by_default(pm2_apps: dict[str, dict[str, Any]]) -> None:
    assert all("uid" not in app and "user" not in app for app in pm2_apps.values())


def test_pm2_file_documents_log_rotation() -> None:
    text = PM2_FILE.read_text(encoding="utf-8")
    assert "pm2 install pm2-logrotate" in text
    assert "pm2-logrotate:max_size" in text


def test_pm2_pins_no_http_port_over_env(pm2_apps: dict[str, dict[str, Any]]) -> None:
    assert "HTTP_PORT" not in pm2_apps["orderbot-server"]["env"]
    # Not even from pm2's environment: pm2 passes that through by itself.
    apps = evaluate_pm2_file(HTTP_PORT="8099")
    assert "HTTP_PORT" not in apps["orderbot-server"]["env"]


@pytest.mark.parametrize("app_name", PM2_APPS)
def test_pm2_sets_no_shared_metrics_port(
    pm2_apps: dict[str, dict[str, Any]], app_name: str
) -> None:
    assert "METRICS_PORT" not in pm2_apps[app_name]["env"]


@pytest.mark.parametrize("app_name", PM2_APPS)
def test_pm2_apps_fork_and_restart_from_the_repository(
    pm2_apps: dict[str, dict[str, Any]], app_name: str
) -> None:
    app = pm2_apps[app_name]
    assert app["exec_mode"] == "fork"
    assert app["autorestart"] is True
    assert Path(app["cwd"]) == REPO


@pytest.mark.parametrize(
    ("app_name", "instances"),
    [("orderbot-server", 1), ("orderbot-worker", 2), ("orderbot-outbox-worker", 1)],
)
def test_pm2_instance_counts(
    pm2_apps: dict[str, dict[str, Any]], app_name: str, instances: int
) -> None:
    assert pm2_apps[app_name]["instances"] == instances


def test_pm2_worker_instances_get_consecutive_metrics_ports(
    pm2_apps: dict[str, dict[str, Any]],
) -> None:
    worker = pm2_apps["orderbot-worker"]
    assert worker["increment_var"] == "WORKER_METRICS_PORT"
    assert int(worker["env"]["WORKER_METRICS_PORT"]) == FIRST_WORKER_METRICS_PORT
    outbox = pm2_apps["orderbot-outbox-worker"]
    assert int(outbox["env"]["OUTBOX_METRICS_PORT"]) == OUTBOX_METRICS_PORT


def test_pm2_metrics_ports_move_with_the_environment() -> None:
    apps = evaluate_pm2_file(WORKER_METRICS_PORT="9851", OUTBOX_METRICS_PORT="9841")
    assert int(apps["orderbot-worker"]["env"]["WORKER_METRICS_PORT"]) == 9851
    assert int(apps["orderbot-outbox-worker"]["env"]["OUTBOX_METRICS_PORT"]) == 9841


def test_pm2_ports_never_collide(pm2_apps: dict[str, dict[str, Any]]) -> None:
    worker = pm2_apps["orderbot-worker"]
    base = int(worker["env"]["WORKER_METRICS_PORT"])
    # Room for `pm2 scale orderbot-worker 8` below the next range.
    ports = [base + n for n in range(8)]
    ports.append(int(pm2_apps["orderbot-outbox-worker"]["env"]["OUTBOX_METRICS_PORT"]))
    ports.append(Settings.model_fields["http_port"].default)
    assert len(ports) == len(set(ports)), ports
    assert NODE_EXPORTER_PORT not in ports
    assert all(port in METRICS_PORT_RANGE for port in ports[:-1])


MDWE_PROBE = """
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except OSError:
    pass
else:
    sys.exit(78)
import asyncio, uvloop, aiohttp, aio_pika, asyncpg, redis, hiredis, orjson, structlog
from cryptography.fernet import Fernet
import orderbot.cli, server.app, worker.service, outbox_worker.service
box = Fernet(Fernet.generate_key())
assert box.decrypt(box.encrypt(b"secret")) == b"secret"
async def main() -> None:
    await asyncio.sleep(0)
uvloop.run(main())
print("ok")
"""


def test_the_processes_work_under_memory_deny_write_execute() -> None:
    # The units set MemoryDenyWriteExecute=yes: no memory both writable and executable.
    # The kernel's own switch for it (PR_SET_MDWE, Linux 6.3+) checks that uvloop,
    # cryptography, hiredis and the rest load and run without such memory.
    done = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    assert done.returncode != 78, "W+X memory was not refused: the probe proves nothing"
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr
