"""Process configuration, read once at start from the environment (and `.env`).

Every name here is a contract: deployment files, tests and operators set these
variables, so renaming one is a breaking change.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

import phonenumbers
from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
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


def _amqp_url_problem(url: str) -> str | None:
    """What is wrong with one node's URL, in words that do not quote it; None if nothing."""
    if not url:
        return "empty (two commas in a row, or one at an end?)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises for a port that is not a number from 0 to 65535)
    except ValueError:
        return "not a URL, or its port is not a number up to 65535"
    if parts.scheme not in ("amqp", "amqps"):
        return "must start with amqp:// or amqps://"
    if not parts.hostname:
        return "has no host"
    return None


def _url_passwords(url: str) -> list[str]:
    """A URL's password as written (percent-encoded) and as sent."""
    password = urlsplit(url).password
    return list(dict.fromkeys([password, unquote(password)])) if password else []


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Durations = Annotated[tuple[timedelta, ...], NoDecode, BeforeValidator(_parse_durations)]
Role = Literal["server", "worker", "outbox_worker", "cli"]


def _phone_region(value: str) -> str:
    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown phone region {value!r} (an ISO 3166 code such as KG)")
    return region


class Settings(BaseSettings):
    """Each field's description is its documentation: README's table and .env.example are
    rendered from them, so a new setting is a field with a description, then
    `make settings-docs`.

    json_schema_extra: "group" starts a topic that the fields after it share; "dev" makes
    .env.example set the variable, to its default (True) or to the development value
    given. `examples` give the value a commented-out line shows instead of the default.
    """

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    amqp_url: str = Field(
        default="amqp://guest:guest@localhost:5672/",
        description="RabbitMQ; for a cluster, each node's URL, comma-separated: a process "
        "connects to one and moves to another when it goes away (docker compose points the "
        "three services at its own hosts)",
        examples=["amqp://orderbot:secret@mq1:5672/,amqp://orderbot:secret@mq2:5672/"],
        json_schema_extra={"group": "Services", "dev": True},
    )
    redis_url: str = Field(
        default="redis://localhost:6379/0",
        description="Redis: dialog state, per-customer locks, dedupe markers, rate budgets",
        json_schema_extra={"dev": True},
    )
    database_url: str = Field(
        default="postgresql://postgres@localhost:5432/orderbot",
        description="PostgreSQL: orders and tenants; `orderbot migrate` creates the database",
        json_schema_extra={"dev": True},
    )
    redis_sentinels: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Redis Sentinels as host:port, comma-separated: set, the processes ask "
        "them for the master of REDIS_SENTINEL_MASTER and follow its failovers (REDIS_URL "
        "then gives only the database number and the master's password)",
        json_schema_extra={"group": "High availability"},
    )
    redis_sentinel_master: str = Field(
        default="mymaster",
        description="the name the Sentinels monitor the master under",
    )
    redis_sentinel_password: SecretStr | None = Field(
        default=None,
        description="the Sentinels' own password (`requirepass` of sentinel.conf), if any",
    )
    database_listen_url: str | None = Field(
        default=None,
        description="a direct PostgreSQL connection for LISTEN (the tenants directory "
        "follows its table): a session of its own, never through a pooler in transaction "
        "mode; unset: DATABASE_URL",
    )
    database_statement_cache_size: int = Field(
        default=100,
        ge=0,
        description="asyncpg's prepared statements cached per connection; 0 when "
        "DATABASE_URL goes through PgBouncer in transaction pooling mode, where a named "
        "statement prepared on one server connection is missing on the next",
    )

    http_host: str = Field(
        default="0.0.0.0",
        description="address the webhook server listens on",
        json_schema_extra={"group": "HTTP server", "dev": True},
    )
    http_port: int = Field(
        default=8080,
        ge=0,
        le=65535,
        description="port of the webhooks, `/health` and (unless SERVER_METRICS_PORT) "
        "`/metrics` and `/health/ready`",
        json_schema_extra={"dev": True},
    )
    http_max_body: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="largest request body in bytes; a bigger one gets 413",
    )
    http_keepalive_timeout: Duration = Field(
        default=timedelta(seconds=75),
        description="an idle connection (nothing sent yet, or between requests) is closed "
        "after this",
    )
    http_read_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="longest a client may take to send a request's body (then 408)",
    )
    http_max_connections: int = Field(
        default=1000,
        ge=1,
        description="connections one server process holds at once; past it, 503 and closed",
    )

    server_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="server processes sharing HTTP_PORT (SO_REUSEPORT), each a whole server "
        "with its own broker connection and spool file: one per core the server may use; "
        "more than one needs a fixed HTTP_PORT, and SERVER_METRICS_PORT gives process i "
        "its own ops port (SERVER_METRICS_PORT + i)",
    )

    metrics_host: str = Field(
        default="127.0.0.1",
        description="address of the ops ports (`/metrics`, `/health`, `/health/ready`), "
        "not HTTP_HOST: a public server address does not expose them",
        json_schema_extra={"group": "Ops ports (metrics and health)", "dev": True},
    )
    worker_metrics_port: int = Field(
        default=9821,
        ge=0,
        le=65535,
        description="a worker's ops port (0: off), away from node_exporter's 9100; pm2 and "
        "systemd give each worker its own (9821, 9822, ...), so a shared env file leaves it "
        "unset",
    )
    outbox_metrics_port: int = Field(
        default=9811,
        ge=0,
        le=65535,
        description="the outbox worker's ops port (0: off)",
    )
    server_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="set: the server's `/metrics` and `/health/ready` move off HTTP_PORT "
        "(which keeps `/health` for a proxy's liveness check) to this port",
        examples=[9801],
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="one process's ops port over its role's (0: off); never in a shared "
        "env file, where every role would take the same port",
        examples=[9821],
    )

    chat2desk_api_url: str = Field(
        default="https://api.chat2desk.com",
        description="Chat2Desk's API, where replies are sent",
        json_schema_extra={"group": "Chat2Desk"},
    )
    chat2desk_api_token: SecretStr | None = Field(
        default=None,
        description="token of Chat2Desk's send API; the workers need it or the Twilio "
        "settings (or tenants from the table)",
        json_schema_extra={"dev": "change-me"},
    )
    chat2desk_webhook_token: SecretStr | None = Field(
        default=None,
        description="secret path segment of the webhook URL, POST "
        "`/webhook/chat2desk/<token>`; the server needs it or the Twilio settings; the "
        "example value is refused unless ORDERBOT_DEV",
        json_schema_extra={"dev": "dev-webhook-token"},
    )
    chat2desk_webhook_signature: Literal["off", "check", "require"] = Field(
        default="off",
        description="Chat2Desk's `X-Signature` (HMAC-SHA256 of the body and `X-Timestamp`, "
        "keyed with the MD5 of the API token): `off`, `check` (when present) or `require`; "
        "a tenant may override it",
    )
    chat2desk_rate_limit: int = Field(
        default=300,
        ge=1,
        description="Chat2Desk send calls a minute per tenant, shared by every process "
        "(a token bucket in Redis)",
    )

    twilio_api_url: str = Field(
        default="https://api.twilio.com",
        description="Twilio's API, where WhatsApp replies are sent",
        json_schema_extra={"group": "Twilio WhatsApp (optional)"},
    )
    twilio_account_sid: str | None = Field(
        default=None,
        description="Twilio account SID; with the auth token and the sender it turns the "
        "channel on",
        examples=["ACxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"],
    )
    twilio_auth_token: SecretStr | None = Field(
        default=None,
        description="Twilio auth token: signs Twilio's webhooks and authorises the sends",
    )
    twilio_whatsapp_from: str | None = Field(
        default=None,
        description="the WhatsApp sender of the replies",
        examples=["whatsapp:+14155238886"],
    )
    twilio_rate_limit: int = Field(
        default=600,
        ge=1,
        description="Twilio send calls a minute per tenant, shared by every process",
    )
    public_base_url: str | None = Field(
        default=None,
        description="the public URL Twilio signs (never taken from the request's Host): "
        "without it the server refuses to start with Twilio set, and answers a table "
        "tenant's Twilio webhooks 503",
        examples=["https://bot.example.com"],
    )

    worker_concurrency: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="consumer prefetch of the worker and the outbox worker: messages in "
        "flight per process (and the size of the worker's database pool)",
        json_schema_extra={"group": "Broker, Redis and tenancy"},
    )
    queue_prefix: str = Field(
        default="",
        description="prefix of every queue and exchange name, so that test runs and "
        "deployments can share one broker",
        json_schema_extra={"dev": True},
    )
    redis_key_prefix: str = Field(
        default="orderbot:",
        description="prefix of every Redis key",
        json_schema_extra={"dev": True},
    )
    tenant: str = Field(
        default="default",
        description="the tenant these settings describe (single-tenant deployments keep `default`)",
    )
    orderbot_master_key: SecretStr | None = Field(
        default=None,
        description="Fernet keys of the `tenants` table's credentials, comma-separated, the "
        "first encrypts (`orderbot tenants new-key` makes one); unset: the table is not "
        "read and only these settings' tenant is served",
    )
    tenants_reload_interval: Duration = Field(
        default=timedelta(seconds=30),
        description="re-read of the `tenants` table, besides its change notifications",
    )

    messages_partitions: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="customer messages are spread over this many queues (`messages.0` …), "
        "each consumed by one worker at a time, so a customer's steps apply in order; "
        "change it with the queues drained, then `orderbot messages repartition`",
        json_schema_extra={"group": "Inbound: the queue and the edge spool"},
    )
    worker_heartbeat: Duration = Field(
        default=timedelta(seconds=1),
        description="how often a worker renews its place in the roll call that shares the "
        "partitions; one that missed three is taken for gone and its partitions move",
    )
    messages_delivery_limit: int = Field(
        default=20,
        ge=1,
        description="deliveries of one message before `messages` dead-letters it to `dlq`",
    )
    messages_max_length: int = Field(
        default=100_000,
        ge=1,
        description="most messages one partition of `messages` holds; past it webhooks are "
        "spooled at the edge (changing it on a live broker needs the queues re-created)",
    )
    amqp_quorum_group_size: int = Field(
        default=3,
        ge=1,
        le=99,
        description="replicas a quorum queue gets when it is created "
        "(`x-quorum-initial-group-size`); the broker places at most one per cluster node, "
        "so 3 on a single node is one; a queue that exists keeps its own "
        "(`rabbitmq-queues grow` adds replicas)",
    )
    publish_timeout: Duration = Field(
        default=timedelta(seconds=5),
        description="wait for the broker's publisher confirm before the server spools",
    )
    spool_dir: Path = Field(
        default=Path("var/spool"),
        description="the edge spool, where webhooks the broker cannot confirm wait on disk "
        "(one SQLite file per server process); relative to the working directory",
    )
    spool_max_bytes: int = Field(
        default=1024**3,
        ge=1024,
        description="bound of the spool; past it a webhook gets 503, the only refusal of a "
        "valid message",
    )
    webhook_rate_limit_customer: int = Field(
        default=20,
        ge=1,
        description="a customer's messages processed a minute; the rest wait in the "
        "`held` queue and the customer is asked once a minute to slow down (never refused)",
    )

    send_attempts: int = Field(
        default=3,
        ge=1,
        description="tries of a reply in the worker before it goes to the outbox",
        json_schema_extra={"group": "Sending replies"},
    )
    send_backoff: Duration = Field(
        default=timedelta(seconds=1),
        description="wait after the first failed try, doubled after each next one (3 "
        "attempts: 1s, then 2s); a provider's Retry-After replaces it",
    )
    send_timeout: Duration = Field(
        default=timedelta(seconds=10),
        description="timeout of one call to a provider's send API",
    )
    send_rate_max_wait: Duration = Field(
        default=timedelta(seconds=2),
        description="longest wait for a rate-limit token before the try fails as transient",
    )

    outbox_max_attempts: int = Field(
        default=50,
        ge=1,
        description="attempts of a reply after which it goes to `dlq`",
        json_schema_extra={"group": "Outbox and dead-letter queue"},
    )
    outbox_max_age: Duration = Field(
        default=timedelta(days=7),
        description="age of a reply after which it goes to `dlq`",
    )
    outbox_delays: Durations = Field(
        default=tuple(timedelta(seconds=s) for s in (5, 10, 20, 40, 80, 160, 300)),
        description="delay tiers between outbox attempts, one RabbitMQ TTL queue each",
    )

    shutdown_timeout: Duration = Field(
        default=timedelta(seconds=25),
        description="on SIGTERM: stop taking work and finish what is in flight within "
        "this; keep it below the supervisor's kill timeout",
        json_schema_extra={"group": "Processes and Redis state"},
    )
    lock_timeout: Duration = Field(
        default=timedelta(seconds=15),
        description="lease of a per-customer lock, renewed while its step runs: the lock of "
        "a worker that died is free again within this",
    )
    dedupe_ttl: Duration = Field(
        default=timedelta(days=7),
        description="how long a processed provider message id is remembered, so that a "
        "redelivery changes nothing",
    )
    dialog_ttl: Duration = Field(
        default=timedelta(hours=24),
        description="a customer's dialog state expires this long after its last step",
    )

    phone_region: str = Field(
        default="KG",
        pattern=r"^[A-Za-z]{2}$",
        description="the region (ISO 3166 code) whose national phone forms the dialog reads, "
        "e.g. 0555 123 456 in KG; a tenant row may override it",
        json_schema_extra={"group": "Order dialog"},
    )
    phone_regions_allowed: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="other regions whose numbers are taken too (comma list, e.g. KZ,UZ); "
        "PHONE_REGION's always are",
    )
    business_name: str = Field(
        default="Orderbot",
        min_length=1,
        max_length=100,
        description="the business's name, as the greeting and the order's acceptance say it; "
        "a tenant row may override it",
    )
    delivery_minutes: int = Field(
        default=60,
        ge=1,
        le=1440,
        description="the delivery promise the order's acceptance makes: within this many "
        "minutes; a tenant row may override it",
    )
    phone_country_code: str | None = Field(
        default=None,
        pattern=r"^\+?\d{1,4}$",
        description="the rule PHONE_REGION replaced, still read: a code that is not "
        "PHONE_REGION's own stops the start rather than silently change which numbers pass",
    )

    handoff_words: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("оператор", "operator", "человек", "менеджер"),
        description="what a customer writes to be answered by a person (comma list; read "
        "like the dialog's own words: any case, punctuation and emoji around them dropped)",
        json_schema_extra={"group": "Hand-off to a person"},
    )
    handoff_ttl: Duration = Field(
        default=timedelta(minutes=30),
        description="a handed-off conversation goes back to the bot after this long without "
        "an operator's message (each one starts it again) or when Chat2Desk closes the dialog",
    )
    chat2desk_operator_group_id: str | None = Field(
        default=None,
        pattern=r"^\d{1,20}$",
        description="Chat2Desk operator group a handed-off dialog is transferred to "
        "(`transfer_to_group`); unset: no transfer, Chat2Desk's own routing stays; a tenant "
        "row may override it",
        examples=["12345"],
    )
    handoff_notify_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="POSTed a JSON note of each hand-off (tenant, provider, client id, "
        "message id, text): how operators hear of a Twilio customer; unset: not sent",
        examples=["https://ops.example.com/hooks/handoff"],
    )

    operator_api_key: SecretStr | None = Field(
        default=None,
        description="bearer key of the operator API under `/api/` (16 characters or more); "
        "unset or empty: the API is off (404); the example value is refused unless "
        "ORDERBOT_DEV",
        json_schema_extra={
            "group": "Order lifecycle and operator API",
            "dev": "dev-operator-api-key",
        },
    )
    support_contact: str | None = Field(
        default=None,
        max_length=200,
        description="told to a customer who rates an order 1 to 3 (a phone number, wa.me "
        "link or e-mail); unset leaves that sentence out of the apology",
        examples=["+996555000000"],
    )
    promo_code: str | None = Field(
        default=None,
        max_length=64,
        description="sent with the thanks for a rating of 4 or 5; unset: the thanks alone",
        examples=["THANKS10"],
    )

    events_stream_length: int = Field(
        default=10000,
        ge=100,
        description="live events a tenant's Redis stream keeps (about): how far back a "
        "browser that reconnects with Last-Event-ID can read",
        json_schema_extra={"group": "Live events and the web chat"},
    )
    events_publish_timeout: Duration = Field(
        default=timedelta(milliseconds=250),
        description="longest a step waits to publish a live event; past it (or with Redis "
        "down) the event is dropped and counted, the step goes on",
    )
    events_keepalive: Duration = Field(
        default=timedelta(seconds=15),
        description="an idle event stream (`/api/events`, the chat's) sends a comment this "
        "often, so that proxies keep it open",
    )
    events_max_streams: int = Field(
        default=20,
        ge=1,
        description="event streams one tenant may hold open at once in one server process; "
        "past it, 429",
    )

    webchat_secret: SecretStr | None = Field(
        default=None,
        description="signs the web chat's customer cookie (16 characters or more); unset or "
        "empty: the web chat at `/chat` is off (404); changing it starts every customer's "
        "chat anew; the example value is refused unless ORDERBOT_DEV",
        json_schema_extra={"dev": "dev-webchat-cookie-secret"},
    )
    webchat_max_text: int = Field(
        default=2000,
        ge=1,
        le=20000,
        description="longest message (characters) a web chat customer may send; a longer "
        "one gets 413",
    )
    webchat_history: int = Field(
        default=200,
        ge=10,
        description="messages a web chat session's stream keeps (about): what a reloaded "
        "page shows again; the stream expires with the dialog (DIALOG_TTL)",
    )

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info",
        description="`debug`, `info`, `warning` or `error`",
        json_schema_extra={"group": "Logging", "dev": True},
    )
    log_format: Literal["json", "console"] = Field(
        default="json",
        description="`json` for log collectors, `console` for a terminal",
        json_schema_extra={"dev": "console"},
    )

    orderbot_dev: bool = Field(
        default=False,
        description="a development machine (`make run` sets it): the example secrets of "
        ".env.example are allowed; never in production",
        examples=[1],
        json_schema_extra={"group": "Development"},
    )

    @field_validator("amqp_url", mode="after")
    @classmethod
    def _amqp_nodes(cls, value: str) -> str:
        """Each node's URL checked at start; the message names the node by its place in
        the list, never by its text, which holds a password."""
        nodes = [node.strip() for node in value.split(",")]
        if not any(nodes):
            raise ValueError("needs at least one amqp:// or amqps:// URL")
        for place, node in enumerate(nodes, start=1):
            problem = _amqp_url_problem(node)
            if problem is not None:
                raise ValueError(f"node {place} of {len(nodes)}: {problem}")
        return ",".join(nodes)

    @property
    def amqp_nodes(self) -> tuple[str, ...]:
        """The broker's nodes, in the order AMQP_URL lists them."""
        return tuple(self.amqp_url.split(","))

    @field_validator("log_level", "log_format", "chat2desk_webhook_signature", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("phone_region", mode="after")
    @classmethod
    def _known_region(cls, value: str) -> str:
        return _phone_region(value)

    @field_validator("phone_regions_allowed", mode="before")
    @classmethod
    def _regions(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(code.strip() for code in value.split(",") if code.strip())
        return value

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _sentinels(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(node.strip() for node in value.split(",") if node.strip())
        return value

    @field_validator("redis_sentinels", mode="after")
    @classmethod
    def _host_and_port(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for node in value:
            host, _, port = node.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{node!r} is not host:port")
        return value

    @field_validator("redis_key_prefix")
    @classmethod
    def _no_hash_tag(cls, value: str) -> str:
        """Keys carry the customer's hash tag; a `{` before it would make Redis Cluster
        hash the prefix instead, and scatter a customer's keys over slots."""
        if "{" in value or "}" in value:
            raise ValueError("must not contain { or }")
        return value

    @field_validator("handoff_words", mode="before")
    @classmethod
    def _words(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(word.strip() for word in value.split(",") if word.strip())
        return value

    @field_validator(
        "chat2desk_operator_group_id",
        "handoff_notify_url",
        "database_listen_url",
        "redis_sentinel_password",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("handoff_ttl")
    @classmethod
    def _positive_ttl(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive")
        return value

    @field_validator("phone_regions_allowed", mode="after")
    @classmethod
    def _known_regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_phone_region(code) for code in value)

    @model_validator(mode="after")
    def _old_phone_rule_agrees(self) -> Settings:
        if self.phone_country_code is not None:
            code = int(self.phone_country_code.removeprefix("+"))
            if code != phonenumbers.country_code_for_region(self.phone_region):
                raise ValueError(
                    f"PHONE_COUNTRY_CODE={self.phone_country_code} is not the code of "
                    f"PHONE_REGION={self.phone_region}: set PHONE_REGION to the country "
                    "(e.g. KZ) and drop PHONE_COUNTRY_CODE and PHONE_NATIONAL_DIGITS"
                )
        return self

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
            self.webchat_secret,
            self.redis_sentinel_password,
        )
        found = [v.get_secret_value() for v in values if v and v.get_secret_value()]
        if self.orderbot_master_key is not None:  # each key of the list on its own
            found += [k.strip() for k in self.orderbot_master_key.get_secret_value().split(",")]
        found += self.console_session_secrets()
        found += [password for node in self.amqp_nodes for password in _url_passwords(node)]
        twilio = self.twilio_credentials()
        if twilio is not None:  # the Basic auth header of the sends
            found += basic_auth_forms(twilio[0], twilio[1])
        return [value for value in found if value]

    def console_session_secrets(self) -> list[str]:
        """The console's signing secrets, newest (the one that signs) first."""
        value = self.console_session_secret
        if value is None:
            return []
        return [part.strip() for part in value.get_secret_value().split(",") if part.strip()]

    def sentinel_nodes(self) -> list[tuple[str, int]]:
        return [
            (host, int(port)) for host, _, port in (n.rpartition(":") for n in self.redis_sentinels)
        ]

    @property
    def listen_url(self) -> str:
        return self.database_listen_url or self.database_url

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

    reconcile_interval: Duration = Field(
        default=timedelta(seconds=60),
        description="how often the reconciler (inside `orderbot outbox-worker`) lists each "
        "tenant's inbound messages at Chat2Desk and Twilio and publishes those no webhook "
        "brought",
        json_schema_extra={"group": "Recovery from the providers' message lists"},
    )
    reconcile_lookback: Duration = Field(
        default=timedelta(hours=24),
        description="how far back a first pass (no watermark yet) reads; older messages are "
        "not answered",
    )
    reconcile_grace: Duration = Field(
        default=timedelta(seconds=30),
        description="a message younger than this is left to its webhook (listed early, it "
        "would count as recovered while its webhook is still on the way)",
    )
    reconcile_max_pages: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="pages of a list read per tenant and pass (200 messages a page at "
        "Chat2Desk, RECONCILE_PAGE_SIZE at Twilio); the rest waits for the next pass",
    )
    reconcile_page_size: int = Field(
        default=200, ge=1, le=1000, description="messages a page of Twilio's list holds"
    )
    reconcile_lease_ttl: Duration = Field(
        default=timedelta(seconds=30),
        description="the Redis lease that keeps one outbox worker reconciling; a killed one "
        "hands over within it",
    )
    reconcile_max_backoff: Duration = Field(
        default=timedelta(minutes=10),
        description="longest pause of a provider list that answers errors or 429",
    )
    reconcile_enabled: bool = Field(default=True, description="`false` turns the reconciler off")

    history_enabled: bool = Field(
        default=True,
        description="keep every customer message and reply, with its delivery status, in "
        "PostgreSQL (`GET /api/conversations`); `false` turns the writing off",
        json_schema_extra={"group": "Conversation history"},
    )
    history_retention: Duration = Field(
        default=timedelta(days=90),
        description="messages older than this are purged (by the outbox worker, hourly, and by "
        "`orderbot history purge`); a conversation goes with its last message",
    )
    history_settle_timeout: Duration = Field(
        default=timedelta(seconds=1),
        description="longest a step waits for its history to be written before it commits "
        "(not at all while the database is failing: history never holds a step up)",
    )
    history_queue_size: int = Field(
        default=10_000,
        ge=1,
        description="entries a process holds while the database is away; beyond, new ones "
        "are dropped and counted",
    )

    console_session_secret: SecretStr | None = Field(
        default=None,
        description="signs the operator console's session cookies (32 characters or more); "
        "several, comma-separated, rotate it: the first signs, any of them verifies; unset: "
        "the console at `/console` is off (404); the example value is refused unless "
        "ORDERBOT_DEV",
        json_schema_extra={
            "group": "Operator console",
            "dev": "dev-console-session-secret-change-me",
        },
    )
    console_session_ttl: Duration = Field(
        default=timedelta(hours=12),
        description="how long a console sign-in lasts; then the operator signs in again",
    )
    console_signin_attempts: int = Field(
        default=10,
        ge=1,
        description="sign-in attempts one client address may make in 15 minutes; past "
        "it, 429 until the window ends (bounds guessing a key)",
    )

    @field_validator("operator_api_key", "webchat_secret")
    @classmethod
    def _strong_api_key(cls, value: SecretStr | None) -> SecretStr | None:
        """A short key can be guessed; refusing it at start beats finding out from a breach."""
        if value is not None and 0 < len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (or empty to turn it off)")
        return value

    @field_validator("console_session_secret")
    @classmethod
    def _strong_session_secret(cls, value: SecretStr | None) -> SecretStr | None:
        """A short secret lets anyone who guesses it sign a session for any tenant."""
        if value is None or not value.get_secret_value().strip():
            return None
        parts = [part.strip() for part in value.get_secret_value().split(",") if part.strip()]
        if any(len(part) < 32 for part in parts):
            raise ValueError("every secret must be at least 32 characters (or unset it)")
        return value


# The secrets of .env.example: known to anyone who read it, so a process serving them
# outside development (ORDERBOT_DEV, set by `make run`) refuses to start.
EXAMPLE_SECRETS = frozenset(
    {
        "dev-webhook-token",
        "dev-operator-api-key",
        "dev-console-session-secret-change-me",
        "dev-webchat-cookie-secret",
    }
)


def refuse_example_secrets(settings: Settings) -> None:
    """ConfigError if a secret of .env.example is in use outside development."""
    if settings.orderbot_dev:
        return
    named = {
        "CHAT2DESK_WEBHOOK_TOKEN": settings.chat2desk_webhook_token,
        "OPERATOR_API_KEY": settings.operator_api_key,
        "CONSOLE_SESSION_SECRET": settings.console_session_secret,
        "WEBCHAT_SECRET": settings.webchat_secret,
    }
    found = [
        name
        for name, value in named.items()
        if value and EXAMPLE_SECRETS & {p.strip() for p in value.get_secret_value().split(",")}
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
