"""AMQP_URL lists a cluster's nodes: each is checked at start, and a bad one is named by
its place, never by its text (which holds a password)."""

from __future__ import annotations

import pytest

from orderbot.config.settings import ConfigError, Settings, load_settings


def test_several_nodes_are_read_in_their_order() -> None:
    settings = Settings(_env_file=None, amqp_url=" amqp://u:p@mq1:5672/ , amqps://u:p@mq2/ ")

    assert settings.amqp_nodes == ("amqp://u:p@mq1:5672/", "amqps://u:p@mq2/")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("amqp://u:hunter2@mq1/,", "node 2 of 2: empty"),
        ("http://u:hunter2@mq1/", "node 1 of 1: must start with amqp://"),
        ("amqp://u:hunter2@mq1/,amqp://u:hunter2@/", "node 2 of 2: has no host"),
        ("amqp://u:hunter2@mq1:99999/", "node 1 of 1: not a URL, or its port"),
    ],
)
def test_a_bad_node_is_refused_without_echoing_it(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(_env_file=None, amqp_url=value)

    assert problem in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_every_node_password_is_a_secret_for_the_log_redactor() -> None:
    settings = Settings(_env_file=None, amqp_url="amqp://u:first%40pw@mq1/,amqp://u:second@mq2/")

    assert {"first%40pw", "first@pw", "second"} <= set(settings.secrets())
