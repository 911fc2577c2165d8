"""The senders of a process: one per (tenant, provider), behind the shared rate limit.

Each tenant sends with its own credentials. A sender is built the first time a
tenant's reply needs it and kept while the tenant's credentials and limit stay as
they are; after a change in the tenant directory the next reply gets a new one.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator

import aiohttp
from redis.asyncio import Redis

from orderbot.config.settings import Settings
from orderbot.conversation.handoff import OwnMessages
from orderbot.conversation.keys import Keys
from orderbot.delivery.chat2desk import Chat2DeskSender
from orderbot.delivery.rate_limit import RateLimitedSender, TokenBucket
from orderbot.delivery.sender import ReplySender
from orderbot.delivery.twilio import TwilioSender, twilio_status_callback
from orderbot.delivery.webchat import WebchatSender, chat_log
from orderbot.envelopes import Conversation
from orderbot.errors import SenderUnavailable, TransientSendError
from orderbot.runtime.resources import open_http
from orderbot.tenancy.directory import Tenant, TenantDirectory


class Senders:
    """The sender for a conversation's tenant and provider."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        session: aiohttp.ClientSession,
        tenants: TenantDirectory,
    ) -> None:
        self._settings = settings
        self._redis = redis
        self._session = session
        self._tenants = tenants
        self._own = OwnMessages(redis, settings.redis_key_prefix)
        # Per tenant and provider: the Tenant the sender was built for (frozen; the
        # directory replaces it on any change), the fingerprint of what it was built
        # from, and the sender.
        self._cache: dict[tuple[str, str], tuple[Tenant, bytes, ReplySender]] = {}

    def for_conversation(self, conversation: Conversation) -> ReplySender:
        """Raises TransientSendError while the directory is not read yet or does not
        know the tenant, SenderUnavailable when the tenant cannot send on this provider."""
        if not self._tenants.loaded:
            raise TransientSendError("tenant directory not loaded yet")
        slug, provider = conversation.tenant, conversation.provider
        tenant = self._tenants.get(slug)
        if tenant is None:
            # Transient: a tenant added a moment ago may not have reached this process
            # yet. One that never appears gives up into the DLQ after OUTBOX_MAX_AGE.
            raise TransientSendError(f"unknown tenant {slug!r}")
        if not tenant.active:
            raise SenderUnavailable(f"tenant {slug!r} is disabled")
        cached = self._cache.get((slug, provider))
        if cached is not None and cached[0] is tenant:
            return cached[2]  # the very object it was built for: nothing can differ
        fingerprint = self._fingerprint(tenant, provider)
        if cached is not None and cached[1] == fingerprint:
            self._cache[(slug, provider)] = (tenant, fingerprint, cached[2])
            return cached[2]
        sender = self._build(tenant, provider)
        self._cache[(slug, provider)] = (tenant, fingerprint, sender)
        return sender

    async def send(self, conversation: Conversation, text: str) -> str | None:
        return await self.for_conversation(conversation).send(conversation, text)

    def _rate(self, tenant: Tenant, provider: str) -> int:
        if tenant.send_rate_limit is not None:
            return tenant.send_rate_limit
        if provider == "twilio":
            return self._settings.twilio_rate_limit
        return self._settings.chat2desk_rate_limit

    def _fingerprint(self, tenant: Tenant, provider: str) -> bytes:
        """What the sender was built from, hashed: a changed credential means a new one."""
        twilio = tenant.twilio_credentials() or ()
        api_token = tenant.chat2desk_api_token
        parts = (
            provider,
            api_token.get_secret_value() if api_token else "",
            *twilio,
            str(self._rate(tenant, provider)),
        )
        return hashlib.sha256("\0".join(parts).encode()).digest()

    def _build(self, tenant: Tenant, provider: str) -> ReplySender:
        settings = self._settings
        if provider == "webchat":  # orderbot's own page: no provider limit to keep to
            return WebchatSender(chat_log(self._redis, settings))
        inner: ReplySender
        if provider == "chat2desk" and tenant.chat2desk_api_token:
            inner = Chat2DeskSender(
                self._session,
                settings.chat2desk_api_url,
                tenant.chat2desk_api_token.get_secret_value(),
                self._own,
            )
        elif provider == "twilio" and (twilio := tenant.twilio_credentials()):
            inner = TwilioSender(
                self._session,
                settings.twilio_api_url,
                *twilio,
                status_callback=twilio_status_callback(settings),
            )
        else:
            raise SenderUnavailable(f"tenant {tenant.slug!r} has no {provider} channel set up")
        return RateLimitedSender(
            inner,
            TokenBucket(self._redis, per_minute=self._rate(tenant, provider)),
            key=Keys(settings.redis_key_prefix).send_bucket(provider, tenant.slug),
            provider=provider,
            max_wait=settings.send_rate_max_wait.total_seconds(),
        )


@contextlib.asynccontextmanager
async def open_senders(
    settings: Settings, redis: Redis, tenants: TenantDirectory
) -> AsyncIterator[Senders]:
    async with open_http(settings) as session:
        yield Senders(settings, redis, session, tenants)
