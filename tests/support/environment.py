"""Where the tests find RabbitMQ and PostgreSQL.

Order: the environment (TEST_AMQP_URL, TEST_DATABASE_URL: what CI and `scripts/test`
set), else testcontainers where a Docker engine answers, else a loud failure.
Integration tests never skip: a test that did not run did not pass.
"""

from __future__ import annotations

import os
from typing import Any

_containers: list[Any] = []


class MissingService(RuntimeError):
    pass


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
    except Exception:
        return False
    return True


def amqp_url() -> str:
    url = os.environ.get("TEST_AMQP_URL")
    if url:
        return url
    if _docker_available():
        from testcontainers.rabbitmq import RabbitMqContainer

        container = RabbitMqContainer("rabbitmq:3.13-alpine").start()
        _containers.append(container)
        host, port = container.get_container_host_ip(), container.get_exposed_port(5672)
        return f"amqp://guest:guest@{host}:{port}/"
    raise MissingService(
        "No RabbitMQ for the integration tests: set TEST_AMQP_URL "
        "(e.g. amqp://guest:guest@127.0.0.1:5672/) or run a Docker engine for testcontainers."
    )


def admin_database_url() -> str:
    """A PostgreSQL URL with rights to create databases (each test gets its own)."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    if _docker_available():
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:16-alpine", driver="asyncpg").start()
        _containers.append(container)
        return container.get_connection_url()
    raise MissingService(
        "No PostgreSQL for the integration tests: set TEST_DATABASE_URL "
        "(e.g. postgresql://postgres@127.0.0.1:5432/postgres) or run a Docker engine."
    )


def stop_containers() -> None:
    while _containers:
        _containers.pop().stop()
