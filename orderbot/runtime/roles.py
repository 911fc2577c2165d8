"""The three processes orderbot runs, described once.

`python -m server`, `orderbot server`, `orderbot run`, pm2 and systemd all start a role
from this table: its entry (named as a string, so that describing a role imports
nothing of it), the settings it cannot start without, and its ops port.
"""

from __future__ import annotations

from dataclasses import dataclass

# Groups of settings of which at least one must be complete ("a Chat2Desk token, or all
# three Twilio settings"). With ORDERBOT_MASTER_KEY the tenants table may supply them.
RequiredSettings = tuple[tuple[str, ...], ...]

_SENDING: RequiredSettings = (
    ("chat2desk_api_token",),
    ("twilio_account_sid", "twilio_auth_token", "twilio_whatsapp_from"),
)


@dataclass(frozen=True, slots=True)
class Role:
    name: str  # the log's `role`, and the package `python -m` runs
    command: str  # `orderbot <command>`
    entry: str  # "module:coroutine function", called as entry(settings, stop)
    required: RequiredSettings
    metrics_port_setting: str  # the setting naming its own ops port
    # Whether METRICS_PORT (one process's override) applies: not to the server, whose ops
    # routes stay on HTTP_PORT unless SERVER_METRICS_PORT moves them.
    metrics_port_override: bool = True
    # "module:function" raising ConfigError for settings the role cannot run with
    check: str | None = None

    @property
    def entry_module(self) -> str:
        return self.entry.partition(":")[0]


SERVER = Role(
    name="server",
    command="server",
    entry="server.app:run_server",
    required=(("chat2desk_webhook_token",), ("twilio_auth_token", "twilio_whatsapp_from")),
    metrics_port_setting="server_metrics_port",
    metrics_port_override=False,
    check="server.app:check_settings",
)
WORKER = Role(
    name="worker",
    command="worker",
    entry="worker.service:run_worker",
    required=_SENDING,
    metrics_port_setting="worker_metrics_port",
)
OUTBOX_WORKER = Role(
    name="outbox_worker",
    command="outbox-worker",
    entry="outbox_worker.service:run_outbox_worker",
    required=_SENDING,
    metrics_port_setting="outbox_metrics_port",
)
ROLES: tuple[Role, ...] = (SERVER, WORKER, OUTBOX_WORKER)


def role_named(name: str) -> Role:
    """The role by its name or its command (`outbox_worker` or `outbox-worker`)."""
    for role in ROLES:
        if name in (role.name, role.command):
            return role
    raise KeyError(name)
