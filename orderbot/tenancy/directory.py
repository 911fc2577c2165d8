"""The businesses a deployment serves, as every process sees them.

Each process keeps the whole `tenants` table in memory (it is small, and a webhook
or a send must not wait for PostgreSQL) and follows it: a dedicated connection
LISTENs on `orderbot_tenants`, which the table's trigger notifies on every change,
and the table is also re-read every TENANTS_RELOAD_INTERVAL and after that
connection was lost, in case a notification was missed. A change therefore
reaches running processes without a restart.

The settings' own tenant (TENANT with the CHAT2DESK_* and TWILIO_* settings) is
part of the directory whenever no row has its slug, so a one-business deployment
needs no table at all; without ORDERBOT_MASTER_KEY the table is not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterable
from time import monotonic
from typing import Literal

import asyncpg
import structlog
from pydantic import BaseModel, ConfigDict, SecretStr

from orderbot.config.secret_box import SecretBox, UnreadableSecret
from orderbot.config.secret_forms import basic_auth_forms
from orderbot.config.settings import Settings
from orderbot.runtime.logging import register_secrets
from orderbot.runtime.tasks import finish
from orderbot.runtime.waiting import sleep_unless_set, until_set_or_stopped

log = structlog.get_logger(__name__)

CHANNEL = "orderbot_tenants"
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


def webhook_token_hash(token: str) -> str:
    """The lookup key of a Chat2Desk webhook token (the table never holds the token)."""
    return hashlib.sha256(token.encode()).hexdigest()


def operator_key_hash(key: str) -> str:
    """The lookup key of an operator API key: keys are long and random, so a plain
    SHA-256 is enough, and the table holds nothing that opens the API."""
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


class Tenant(BaseModel):
    """One business: its credentials (decrypted, in memory only) and its limits.

    A limit of None means the deployment's setting applies.
    """

    model_config = ConfigDict(frozen=True)

    slug: str
    name: str
    active: bool = True
    chat2desk_api_token: SecretStr | None = None
    chat2desk_webhook_token: SecretStr | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_whatsapp_from: str | None = None
    webhook_rate_limit_customer: int | None = None
    send_rate_limit: int | None = None
    operator_api_key_sha256: str | None = None
    chat2desk_webhook_signature: Literal["off", "check", "require"] | None = None
    phone_region: str | None = None
    phone_regions_allowed: tuple[str, ...] | None = None
    chat2desk_operator_group_id: str | None = None
    business_name: str | None = None
    delivery_minutes: int | None = None
    from_settings: bool = False

    @property
    def webhook_token_sha256(self) -> str | None:
        token = _plain(self.chat2desk_webhook_token)
        return webhook_token_hash(token) if token else None

    def twilio_credentials(self) -> tuple[str, str, str] | None:
        """(account SID, auth token, WhatsApp sender) when the Twilio channel is set up."""
        token = _plain(self.twilio_auth_token)
        if self.twilio_account_sid and token and self.twilio_whatsapp_from:
            return self.twilio_account_sid, token, self.twilio_whatsapp_from
        return None

    def secrets(self) -> list[str]:
        values = (self.chat2desk_api_token, self.chat2desk_webhook_token, self.twilio_auth_token)
        found = [v for v in (_plain(s) for s in values) if v]
        token = _plain(self.twilio_auth_token)
        if self.twilio_account_sid and token:  # the Basic auth header of the sends
            found += basic_auth_forms(self.twilio_account_sid, token)
        return found


def _plain(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def settings_tenant(settings: Settings) -> Tenant:
    """The tenant the settings describe (the whole story of a single-tenant deployment)."""
    return Tenant(
        slug=settings.tenant,
        name=settings.tenant,
        chat2desk_api_token=settings.chat2desk_api_token or None,
        chat2desk_webhook_token=settings.chat2desk_webhook_token or None,
        twilio_account_sid=settings.twilio_account_sid or None,
        twilio_auth_token=settings.twilio_auth_token or None,
        twilio_whatsapp_from=settings.twilio_whatsapp_from or None,
        from_settings=True,
    )


def tenant_from_row(row: asyncpg.Record, box: SecretBox) -> Tenant:
    """A table row with its credentials decrypted; UnreadableSecret if a key is wrong."""

    def secret(column: str) -> SecretStr | None:
        value = row[column]
        return SecretStr(box.decrypt(value)) if value else None

    return Tenant(
        slug=row["slug"],
        name=row["name"],
        active=row["active"],
        chat2desk_api_token=secret("chat2desk_api_token_enc"),
        chat2desk_webhook_token=secret("chat2desk_webhook_token_enc"),
        twilio_account_sid=row["twilio_account_sid"],
        twilio_auth_token=secret("twilio_auth_token_enc"),
        twilio_whatsapp_from=row["twilio_whatsapp_from"],
        webhook_rate_limit_customer=row["webhook_rate_limit_customer"],
        send_rate_limit=row["send_rate_limit"],
        operator_api_key_sha256=row["operator_api_key_sha256"],
        chat2desk_webhook_signature=row["chat2desk_webhook_signature"],
        phone_region=row["phone_region"],
        phone_regions_allowed=row["phone_regions_allowed"],
        chat2desk_operator_group_id=row["chat2desk_operator_group_id"],
        business_name=row["business_name"],
        delivery_minutes=row["delivery_minutes"],
    )


STALE_GRACE = 120.0  # seconds; see TenantDirectory.stale


class TenantDirectory:
    """Lookups by slug, webhook token and Twilio number over one consistent snapshot.

    `loaded` is False until the table was read once: until then a caller cannot
    tell an unknown tenant from one not read yet, and must answer "retry later".
    The same holds while the snapshot is `stale`: its follower lost the connection
    that LISTENs for changes, so a tenant added or a token rotated meanwhile would be
    unknown here. The tenants already known keep being served from the snapshot.
    """

    def __init__(self, settings: Settings, *, loaded: bool = True) -> None:
        self._settings_tenant = settings_tenant(settings)
        self._loaded = asyncio.Event()
        if loaded:
            self._loaded.set()
        self._stale_since: float | None = None
        self._replace([])

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    @property
    def stale(self) -> bool:
        """Whether changes to the table may have gone unseen, for at most STALE_GRACE.

        Past the grace the snapshot is trusted again: the follower reconnects within
        seconds once PostgreSQL answers, so a longer outage is this process's own or
        long, and answering every bad token "retry later" for its whole length would
        turn the 403 of a bad token into a 503 for scanners and stale configurations alike.
        """
        since = self._stale_since
        return since is not None and monotonic() - since < STALE_GRACE

    def mark_stale(self) -> None:
        if self._stale_since is None:
            self._stale_since = monotonic()

    @property
    def uncertain(self) -> bool:
        """Whether "not found" may be wrong: not read yet, or possibly out of date."""
        return not self.loaded or self.stale

    def is_unreadable(self, key: str) -> bool:
        return key in self._unreadable

    async def wait_loaded(self, stop: asyncio.Event) -> bool:
        """Wait for the first read of the table; False if stopped first."""
        return await until_set_or_stopped(self._loaded, stop)

    def _replace(self, rows: Iterable[Tenant], unreadable: frozenset[str] = frozenset()) -> None:
        by_slug = {tenant.slug: tenant for tenant in rows}
        self._unreadable = unreadable
        if self._settings_tenant.slug not in unreadable:  # a broken row is not overridden
            by_slug.setdefault(self._settings_tenant.slug, self._settings_tenant)
        register_secrets(s for tenant in by_slug.values() for s in tenant.secrets())
        by_hash: dict[str, Tenant] = {}
        by_number: dict[str, Tenant] = {}
        by_operator_key: dict[str, Tenant] = {}
        # The settings' tenant first, so a row claiming the same token or number wins.
        for tenant in sorted(by_slug.values(), key=lambda t: not t.from_settings):
            if (digest := tenant.webhook_token_sha256) is not None:
                by_hash[digest] = tenant
            if tenant.twilio_whatsapp_from:
                by_number[tenant.twilio_whatsapp_from] = tenant
            if tenant.operator_api_key_sha256:
                by_operator_key[tenant.operator_api_key_sha256] = tenant
        # Swapped in whole: a reader never sees half of a reload.
        self._by_slug, self._by_hash, self._by_number = by_slug, by_hash, by_number
        self._by_operator_key = by_operator_key

    def get(self, slug: str) -> Tenant | None:
        return self._by_slug.get(slug)

    def by_webhook_token(self, token: str) -> Tenant | None:
        # A hash lookup: its timing says nothing about the stored token.
        return self.by_webhook_token_hash(webhook_token_hash(token))

    def by_webhook_token_hash(self, digest: str) -> Tenant | None:
        return self._by_hash.get(digest)

    def by_operator_key(self, key: str) -> Tenant | None:
        return self._by_operator_key.get(operator_key_hash(key))

    def by_twilio_number(self, number: str) -> Tenant | None:
        return self._by_number.get(number)

    def unavailable(self, key: str) -> bool:
        """Whether a lookup that found nothing may be a tenant this process cannot read
        yet: the table was not read once, or `key` (a slug, webhook token hash or Twilio
        number) belongs to a row that does not decrypt. Such a webhook must be answered
        "retry later", not refused: the provider drops a message refused with a 4xx."""
        return self.uncertain or key in self._unreadable

    def all(self) -> list[Tenant]:
        return sorted(self._by_slug.values(), key=lambda t: t.slug)

    async def reload(self, conn: asyncpg.Connection, box: SecretBox) -> None:
        rows = await conn.fetch("SELECT * FROM tenants")
        tenants: list[Tenant] = []
        unreadable: set[str] = set()
        for row in rows:
            try:
                tenants.append(tenant_from_row(row, box))
            except UnreadableSecret:
                # Fail closed for this tenant only, loudly: it is unknown to this process
                # (webhooks refused, replies retried through the outbox until the key is
                # fixed or they give up into the DLQ); every other tenant goes on.
                log.error("tenant_unreadable", tenant=row["slug"], error="wrong master key")
                # The plain columns still name it, so its webhooks get a 503, not a 4xx.
                unreadable.update(
                    key
                    for key in (
                        row["slug"],
                        row["chat2desk_webhook_token_sha256"],
                        row["twilio_whatsapp_from"],
                    )
                    if key
                )
        self._replace(tenants, frozenset(unreadable))
        self._stale_since = None
        if not self.loaded:
            log.info("tenants_loaded", count=len(tenants))
        self._loaded.set()


@contextlib.asynccontextmanager
async def open_tenant_directory(settings: Settings, role: str) -> AsyncIterator[TenantDirectory]:
    """The directory of this process, followed in the background until the block ends."""
    master_key = settings.orderbot_master_key
    if master_key is None:
        yield TenantDirectory(settings)
        return
    directory = TenantDirectory(settings, loaded=False)
    follower = _Follower(directory, settings, SecretBox(master_key.get_secret_value()), role)
    task = asyncio.create_task(follower.run(), name="tenant-directory")
    try:
        yield directory
    finally:
        follower.stop()
        await finish(task)


class _Follower:
    """Keeps the directory in step with the table: LISTEN, periodic and reconnect reloads."""

    def __init__(
        self, directory: TenantDirectory, settings: Settings, box: SecretBox, role: str
    ) -> None:
        self._directory = directory
        # A session of its own: LISTEN does not survive a pooler in transaction mode.
        self._url = settings.listen_url
        self._statement_cache_size = settings.database_statement_cache_size
        self._interval = settings.tenants_reload_interval.total_seconds()
        self._box = box
        self._role = role
        self._stopping = False
        self._wake = asyncio.Event()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _poke(self, *_: object) -> None:
        self._wake.set()

    async def run(self) -> None:
        delay = 0.2
        while not self._stopping:
            try:
                await self._follow()
                delay = 0.2
            except Exception as exc:
                self._directory.mark_stale()
                log.warning("tenants_follow_failed", error=repr(exc), retry_in=delay)
                if not self._stopping:
                    # Set when the connection was lost: it must not cut every backoff short.
                    self._wake.clear()
                await sleep_unless_set(delay, self._wake)
                delay = min(delay * 2, 5.0)

    async def _follow(self) -> None:
        conn = await asyncpg.connect(
            self._url,
            timeout=5,
            command_timeout=10,
            statement_cache_size=self._statement_cache_size,
            server_settings={"application_name": f"orderbot-tenants-{self._role}"},
        )
        try:
            conn.add_termination_listener(self._poke)
            # LISTEN before the read, so a change committed in between is not missed.
            await conn.add_listener(CHANNEL, self._poke)
            self._wake.clear()
            await self._directory.reload(conn, self._box)
            while not self._stopping:
                await sleep_unless_set(self._interval, self._wake)
                self._wake.clear()
                if self._stopping:
                    return
                if conn.is_closed():
                    self._directory.mark_stale()
                    log.warning("tenants_listen_lost")
                    return  # reconnect, then reload: what changed meanwhile is read then
                await self._directory.reload(conn, self._box)
        finally:
            if not conn.is_closed():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2)
            conn.terminate()
