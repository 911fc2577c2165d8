"""Process configuration, read once at start from the environment (and `.env`).

Every name here is a contract: deployment files, tests and operators set these
variables, so renaming one is a breaking change.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from orderbot.config.secret_forms import basic_auth_forms

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> timedelta:
    """Read `250ms`, `5s`, `1m`, `7d` or a bare number of seconds.

    Operators write durations in env files; a unit suffix is less error-prone than
    remembering which setting takes milliseconds.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if match is None:
        raise ValueError(f"not a duration: {value!r} (use e.g. 500ms, 5s, 1m, 7d)")
    number, unit = match.groups()
    return timedelta(seconds=float(number) * _UNIT_SECONDS[unit or "s"])


def _parse_durations(value: object) -> tuple[timedelta, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError(f"not a list of durations: {value!r}")
    delays = tuple(parse_duration(item) for item in items if str(item).strip())
    if not delays:
        raise ValueError("needs at least one duration")
    return delays


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Durations = Annotated[tuple[timedelta, ...], NoDecode, BeforeValidator(_parse_durations)]
Role = Literal["server", "worker", "outbox_worker", "cli"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    amqp_url: str = "amqp://guest:guest@localhost:5672/"
    redis_url: str = "redis://localhost:6379/0"
    database_url: str = "postgresql://postgres@localhost:5432/orderbot"

    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, ge=0, le=65535)
    # Each worker role's own ops port (/metrics, /health), in a range of their own: 9100
    # is node_exporter's. METRICS_PORT overrides it for one process (0 turns it off); it
    # is no setting for a shared .env, where every role would take the same port.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    worker_metrics_port: int = Field(default=9821, ge=0, le=65535)
    # Set: the server's /metrics and /health/ready move off the public HTTP_PORT to this
    # port on METRICS_HOST (HTTP_PORT keeps /health for the proxy's liveness check).
    server_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    outbox_metrics_port: int = Field(default=9811, ge=0, le=65535)
    http_max_body: int = Field(default=1024 * 1024, ge=1024)
    # An idle connection (none sent yet, or between requests) is closed after this.
    http_keepalive_timeout: Duration = timedelta(seconds=75)
    # The longest a client may take to send a request's body.
    http_read_timeout: Duration = timedelta(seconds=30)
    # Connections a server process holds at once; past it, 503 and closed.
    http_max_connections: int = Field(default=1000, ge=1)

    chat2desk_api_url: str = "https://api.chat2desk.com"
    chat2desk_api_token: SecretStr | None = None
    chat2desk_webhook_token: SecretStr | None = None

    twilio_api_url: str = "https://api.twilio.com"
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_whatsapp_from: str | None = None
    twilio_rate_limit: int = Field(default=600, ge=1)
    public_base_url: str | None = None

    worker_concurrency: int = Field(default=10, ge=1, le=1000)
    queue_prefix: str = ""
    redis_key_prefix: str = "orderbot:"
    tenant: str = "default"
    # Fernet keys (comma list, the first encrypts) of the credentials in the `tenants`
    # table; unset means this deployment serves only the tenant of these settings.
    orderbot_master_key: SecretStr | None = None
    # Fallback re-read of the `tenants` table, besides its NOTIFY.
    tenants_reload_interval: Duration = timedelta(seconds=30)

    messages_delivery_limit: int = Field(default=20, ge=1)
    messages_max_length: int = Field(default=100_000, ge=1)
    publish_timeout: Duration = timedelta(seconds=5)

    send_attempts: int = Field(default=3, ge=1)
    send_backoff: Duration = timedelta(seconds=1)
    send_timeout: Duration = timedelta(seconds=10)
    chat2desk_rate_limit: int = Field(default=300, ge=1)
    send_rate_max_wait: Duration = timedelta(seconds=2)
    # A customer's messages a minute that the worker processes; the rest is parked in the
    # DLQ (reason rate_limited) with one "please wait" answer per minute. Never refused.
    webhook_rate_limit_customer: int = Field(default=20, ge=1)

    # The edge spool: where webhooks wait, durable, while the broker cannot confirm them.
    spool_dir: Path = Path("var/spool")
    spool_max_bytes: int = Field(default=1024**3, ge=1024)
    # Chat2Desk's X-Signature (HMAC-SHA256 of body + X-Timestamp, keyed with the MD5 of
    # the API token): off, check (when present), require. A tenant row may override it.
    chat2desk_webhook_signature: Literal["off", "check", "require"] = "off"

    outbox_max_attempts: int = Field(default=50, ge=1)
    outbox_max_age: Duration = timedelta(days=7)
    outbox_delays: Durations = tuple(timedelta(seconds=s) for s in (5, 10, 20, 40, 80, 160, 300))

    shutdown_timeout: Duration = timedelta(seconds=25)
    lock_timeout: Duration = timedelta(seconds=15)
    dedupe_ttl: Duration = timedelta(days=7)
    dialog_ttl: Duration = timedelta(hours=24)

    phone_country_code: str = Field(default="996", pattern=r"^\d{1,4}$")
    phone_national_digits: int = Field(default=9, ge=4, le=14)

    # A development machine (`make run`): the example secrets of .env.example are allowed.
    orderbot_dev: bool = False

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    @field_validator("log_level", "log_format", "chat2desk_webhook_signature", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("orderbot_master_key")
    @classmethod
    def _valid_master_key(cls, value: SecretStr | None) -> SecretStr | None:
        """A bad key found at start beats every tenant failing to decrypt later."""
        if value is None or not value.get_secret_value().strip():
            return None
        from orderbot.config.secret_box import parse_keys

        parse_keys(value.get_secret_value())  # MasterKeyError is a ValueError
        return value

    @field_validator("outbox_delays")
    @classmethod
    def _positive_delays(cls, value: tuple[timedelta, ...]) -> tuple[timedelta, ...]:
        if any(delay <= timedelta(0) for delay in value):
            raise ValueError("every delay must be positive")
        return value

    def queue(self, name: str) -> str:
        """Name of a broker queue or exchange, with this deployment's prefix."""
        return f"{self.queue_prefix}{name}"

    def secrets(self) -> list[str]:
        """Every configured secret value, for the log redactor."""
        values = (
            self.chat2desk_api_token,
            self.chat2desk_webhook_token,
            self.twilio_auth_token,
            self.operator_api_key,
        )
        found = [v.get_secret_value() for v in values if v and v.get_secret_value()]
        if self.orderbot_master_key is not None:  # each key of the list on its own
            found += [k.strip() for k in self.orderbot_master_key.get_secret_value().split(",")]
        twilio = self.twilio_credentials()
        if twilio is not None:  # the Basic auth header of the sends
            found += basic_auth_forms(twilio[0], twilio[1])
        return [value for value in found if value]

    def twilio_credentials(self) -> tuple[str, str, str] | None:
        """(account SID, auth token, WhatsApp sender) when the Twilio channel is set up."""
        token = self.twilio_auth_token.get_secret_value() if self.twilio_auth_token else ""
        if self.twilio_account_sid and token and self.twilio_whatsapp_from:
            return self.twilio_account_sid, token, self.twilio_whatsapp_from
        return None

    def require_any(self, *groups: tuple[str, ...]) -> None:
        """Fail at start unless every setting of at least one group is set.

        With a master key the credentials may all come from the `tenants` table, so
        the settings' own tenant needs none.
        """
        if self.orderbot_master_key is not None:
            return
        if not any(all(getattr(self, name) for name in group) for group in groups):
            options = " or ".join(" + ".join(n.upper() for n in group) for group in groups)
            raise ConfigError(f"missing required setting: {options}")

    # --- Recovery: the providers' message lists, read for what never reached us ----------------
    # How often the reconciler (inside `orderbot outbox-worker`) lists each tenant's inbound
    # messages at Chat2Desk and Twilio and publishes those it has not seen.
    reconcile_interval: Duration = timedelta(seconds=60)
    # How far back its first pass (no watermark yet) looks; older messages are not answered.
    reconcile_lookback: Duration = timedelta(hours=24)
    # A message younger than this is left to its webhook: listed early, it would be counted
    # as recovered while its webhook is still on the way.
    reconcile_grace: Duration = timedelta(seconds=30)
    # Pages of a provider's list read per tenant and pass (200 messages a page at
    # Chat2Desk, RECONCILE_PAGE_SIZE at Twilio); the rest waits for the next pass.
    reconcile_max_pages: int = Field(default=10, ge=1, le=1000)
    # Messages a page of Twilio's list holds (Twilio allows up to 1000).
    reconcile_page_size: int = Field(default=200, ge=1, le=1000)
    # The reconciler's Redis lease: one process reconciles at a time, and a killed one
    # hands over after at most this long.
    reconcile_lease_ttl: Duration = timedelta(seconds=30)
    # The longest a provider that answers errors or 429 is left alone before a new try.
    reconcile_max_backoff: Duration = timedelta(minutes=10)
    # false turns the reconciler off (say, while a deployment runs its own recovery).
    reconcile_enabled: bool = True

    # --- The order lifecycle and the operator API ---------------------------------------------
    # Bearer key of /api/; unset or empty disables the operator API (its routes answer 404).
    operator_api_key: SecretStr | None = None
    # Shown in the apology after a rating of 1 to 3, e.g. a phone number or a wa.me link.
    support_contact: str | None = Field(default=None, max_length=200)
    # Sent with the thanks after a rating of 4 or 5.
    promo_code: str | None = Field(default=None, max_length=64)

    @field_validator("operator_api_key")
    @classmethod
    def _strong_api_key(cls, value: SecretStr | None) -> SecretStr | None:
        """A short key can be guessed; refusing it at start beats finding out from a breach."""
        if value is not None and 0 < len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (or empty to disable the API)")
        return value


# The secrets of .env.example: known to anyone who read it, so a process serving them
# outside development (ORDERBOT_DEV, set by `make run`) refuses to start.
EXAMPLE_SECRETS = frozenset({"dev-webhook-token", "dev-operator-api-key"})


def refuse_example_secrets(settings: Settings) -> None:
    """ConfigError if a secret of .env.example is in use outside development."""
    if settings.orderbot_dev:
        return
    named = {
        "CHAT2DESK_WEBHOOK_TOKEN": settings.chat2desk_webhook_token,
        "OPERATOR_API_KEY": settings.operator_api_key,
    }
    found = [
        name
        for name, value in named.items()
        if value and value.get_secret_value() in EXAMPLE_SECRETS
    ]
    if found:
        raise ConfigError(
            f"{', '.join(found)} still holds the example value of .env.example; set a secret "
            "of your own (or ORDERBOT_DEV=1 on a development machine, as `make run` does)"
        )


class ConfigError(Exception):
    """A setting is missing or invalid; the message is the one line an operator sees."""


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning pydantic's report into one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
