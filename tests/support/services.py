"""Finding RabbitMQ, Redis and PostgreSQL for the tests.

The services named by AMQP_URL, REDIS_URL and DATABASE_URL (or their defaults) are
used when they answer. Those that do not answer are started with testcontainers when a
Docker engine is present, so a laptop with Docker needs no setup at all.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit


@dataclass(frozen=True)
class Services:
    amqp_url: str
    redis_url: str
    postgres_url: str  # a server URL; each test session creates its own database on it

    def database_url(self, name: str) -> str:
        parts = urlsplit(self.postgres_url)
        return urlunsplit(parts._replace(path=f"/{name}"))


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "localhost", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def _docker_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def find_services() -> Iterator[Services]:
    local = Services(
        amqp_url=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        postgres_url=os.environ.get(
            "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    reachable = {
        "RabbitMQ": _answers(local.amqp_url, 5672),
        "Redis": _answers(local.redis_url, 6379),
        "PostgreSQL": _answers(local.postgres_url, 5432),
    }
    missing = [name for name, ok in reachable.items() if not ok]
    if not missing:
        yield local
        return
    if not _docker_available():
        raise RuntimeError(
            f"{', '.join(missing)} not reachable and no Docker engine to start them: "
            "start the services or set AMQP_URL / REDIS_URL / DATABASE_URL"
        )
    # Only what does not answer runs in a container (`make test` leaves exactly those
    # to this: .ci/services.sh --for-tests).
    with _containers(local, frozenset(missing)) as services:
        yield services


@contextlib.contextmanager
def _containers(local: Services, missing: frozenset[str]) -> Iterator[Services]:
    from testcontainers.postgres import PostgresContainer
    from testcontainers.rabbitmq import RabbitMqContainer
    from testcontainers.redis import RedisContainer

    with contextlib.ExitStack() as stack:
        amqp, redis_url, postgres_url = local.amqp_url, local.redis_url, local.postgres_url
        if "RabbitMQ" in missing:
            rabbit = stack.enter_context(RabbitMqContainer("rabbitmq:3.13-management"))
            host, port = rabbit.get_container_host_ip(), rabbit.get_exposed_port(5672)
            amqp = f"amqp://guest:guest@{host}:{port}/"
        if "Redis" in missing:
            redis = stack.enter_context(RedisContainer("redis:7"))
            redis_url = f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0"
        if "PostgreSQL" in missing:
            postgres = stack.enter_context(PostgresContainer("postgres:16", driver=None))
            postgres_url = postgres.get_connection_url()
        yield Services(amqp_url=amqp, redis_url=redis_url, postgres_url=postgres_url)
