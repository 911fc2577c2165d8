"""One reconcile pass: every tenant's and channel's inbound messages since its cursor,
and each one no webhook brought, published as that webhook would have.

A message published here may also have come by webhook, or be queued already: the
worker's processed-marker (per provider message id) makes it count once, and a message
whose marker is set is not published at all. The cursor is saved only once everything
the pass took is confirmed by the broker, so a pass cut short by a crash, a broker or a
provider error is read again, never skipped. A provider that fails is left alone for a
growing while (RECONCILE_MAX_BACKOFF at most, or its Retry-After).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import aiohttp
import structlog
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis

from orderbot.amqp.publisher import Publisher
from orderbot.config.settings import Settings
from orderbot.conversation.key_layout import UntaggedMarkers
from orderbot.conversation.keys import Keys
from orderbot.envelopes import InboundMessage, encode, utcnow
from orderbot.recovery import chat2desk, twilio
from orderbot.recovery.chat2desk import Chat2DeskLists, Webhook
from orderbot.recovery.errors import ListUnavailable
from orderbot.recovery.pages import (
    CHAT2DESK_PAGE_LIMIT,
    Chat2DeskCursor,
    Chat2DeskItem,
    TwilioCursor,
    TwilioItem,
    chat2desk_ascending,
    chat2desk_descending,
    parse_chat2desk_time,
    twilio_page,
    twilio_window,
    whole_second,
)
from orderbot.recovery.twilio import TwilioLists
from orderbot.runtime import metrics
from orderbot.tenancy.directory import Tenant, TenantDirectory

log = structlog.get_logger(__name__)

PUBLISHED, ALREADY_PROCESSED, DRY_RUN = "published", "already_processed", "dry_run"
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Found:
    """A customer message a list showed and what the pass did with it."""

    tenant: str
    provider: str
    message_id: str
    client_id: str
    text: str
    outcome: str

    def as_dict(self) -> dict[str, str]:
        return {
            "tenant": self.tenant,
            "provider": self.provider,
            "message_id": self.message_id,
            "client_id": self.client_id,
            "text": self.text,
            "outcome": self.outcome,
        }


@dataclass
class PassReport:
    found: list[Found] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    disabled_webhooks: list[tuple[str, Webhook]] = field(default_factory=list)

    @property
    def published(self) -> int:
        return sum(1 for f in self.found if f.outcome == PUBLISHED)


class _Cut(Exception):
    """The lease was lost mid-pass: another process reconciles now."""


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        session: aiohttp.ClientSession,
        tenants: TenantDirectory,
        publisher: Publisher | None,
    ) -> None:
        """`publisher` None: a dry run, which publishes nothing and moves no cursor."""
        self._settings = settings
        self._redis = redis
        self._session = session
        self._tenants = tenants
        self._publisher = publisher
        self._keys = Keys(settings.redis_key_prefix)
        self._untagged = UntaggedMarkers(redis, settings.redis_key_prefix)
        self._backoff: dict[tuple[str, str], tuple[float, int]] = {}

    async def run_pass(
        self,
        *,
        tenant: str | None = None,
        since: timedelta | None = None,
        keep_lease: Callable[[], Awaitable[bool]] | None = None,
        check_webhooks: bool = True,
    ) -> PassReport:
        """`since`: read from that long ago instead of the cursors, and leave them as they
        are (`orderbot reconcile --since`)."""
        report = PassReport()
        ran: dict[str, bool] = {}
        for each in self._tenants.all():
            if (tenant is not None and each.slug != tenant) or not each.active:
                continue
            for provider in _channels(each):
                if keep_lease is not None and not await keep_lease():
                    log.warning("reconcile_lease_lost")
                    return report
                if not self._due(each.slug, provider):
                    continue
                try:
                    await self._channel(each, provider, since, report, check_webhooks)
                except ListUnavailable as exc:
                    ran[provider] = False
                    report.failures.append(f"{each.slug}/{provider}: {exc}")
                    self._failed(each.slug, provider, exc)
                else:
                    ran.setdefault(provider, True)
                    self._backoff.pop((each.slug, provider), None)
        for provider, ok in ran.items():
            if ok:
                metrics.RECONCILE_LAST_SUCCESS.labels(provider).set(time.time())
        return report

    def _due(self, slug: str, provider: str) -> bool:
        backoff = self._backoff.get((slug, provider))
        return backoff is None or time.monotonic() >= backoff[0]

    def _failed(self, slug: str, provider: str, exc: ListUnavailable) -> None:
        failures = self._backoff.get((slug, provider), (0.0, 0))[1] + 1
        interval = self._settings.reconcile_interval.total_seconds()
        delay = min(
            interval * 2 ** (failures - 1), self._settings.reconcile_max_backoff.total_seconds()
        )
        if exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        self._backoff[(slug, provider)] = (time.monotonic() + delay, failures)
        log.warning(
            "reconcile_list_failed",
            tenant=slug,
            provider=provider,
            error=str(exc),
            failures=failures,
            retry_in=round(delay, 3),
        )

    async def _channel(
        self,
        tenant: Tenant,
        provider: str,
        since: timedelta | None,
        report: PassReport,
        webhooks: bool,
    ) -> None:
        if provider == chat2desk.PROVIDER:
            token = tenant.chat2desk_api_token
            assert token is not None
            lists = Chat2DeskLists(
                self._session, self._settings.chat2desk_api_url, token.get_secret_value()
            )
            await self._chat2desk(tenant, lists, since, report)
            if webhooks:
                await self._webhooks(tenant, lists, report)
        else:
            await self._twilio(tenant, since, report)

    # --- Chat2Desk -----------------------------------------------------------------------------

    async def _chat2desk(
        self, tenant: Tenant, lists: Chat2DeskLists, since: timedelta | None, report: PassReport
    ) -> None:
        settings = self._settings
        key = self._keys.reconcile_watermark(tenant.slug, chat2desk.PROVIDER)
        cursor = (
            Chat2DeskCursor() if since is not None else await self._load(key, Chat2DeskCursor())
        )
        now = utcnow()
        ceiling = whole_second(now - settings.reconcile_grace)
        taken: list[tuple[int, InboundMessage]] = []
        limit = CHAT2DESK_PAGE_LIMIT
        floor = now - (since if since is not None else settings.reconcile_lookback)
        if cursor.last_id is None:
            last: int | None = None
            for page in range(settings.reconcile_max_pages):
                raw = await lists.messages(order="desc", limit=limit, offset=page * limit)
                items, messages = _read_chat2desk(raw, tenant.slug)
                verdict, last = chat2desk_descending(
                    items, floor=floor, ceiling=ceiling, limit=limit, last_id=last
                )
                taken += [(items[i].id, m) for i in verdict.take if (m := messages[i])]
                if not verdict.more:
                    break
            else:
                log.warning("reconcile_lookback_cut", tenant=tenant.slug, provider="chat2desk")
        else:
            last = cursor.last_id
            for _ in range(settings.reconcile_max_pages):
                raw = await lists.messages(order="asc", limit=limit, start_id=last + 1)
                items, messages = _read_chat2desk(raw, tenant.slug)
                verdict, after = chat2desk_ascending(
                    items, after_id=last, floor=floor, ceiling=ceiling, limit=limit
                )
                taken += [(items[i].id, m) for i in verdict.take if (m := messages[i])]
                moved, last = after != last, after
                if not verdict.more or not moved:
                    break
        taken.sort(key=lambda pair: pair[0])
        await self._publish([m for _, m in taken], report)
        if since is None and self._publisher is not None and last != cursor.last_id:
            await self._save(key, Chat2DeskCursor(last_id=last))

    async def _webhooks(self, tenant: Tenant, lists: Chat2DeskLists, report: PassReport) -> None:
        try:
            hooks = await lists.webhooks()
        except ListUnavailable as exc:
            log.warning("chat2desk_webhooks_unreadable", tenant=tenant.slug, error=str(exc))
            return
        disabled = [hook for hook in hooks if hook.disabled]
        metrics.CHAT2DESK_WEBHOOKS_DISABLED.labels(tenant.slug).set(len(disabled))
        for hook in disabled:
            report.disabled_webhooks.append((tenant.slug, hook))
            last_error = hook.errors[-1].text if hook.errors else None
            # Not its URL: that holds a webhook token, perhaps one no longer ours to mask.
            log.warning(
                "chat2desk_webhook_disabled",
                tenant=tenant.slug,
                webhook_id=hook.id,
                webhook_name=hook.name,
                last_error=last_error,
            )

    # --- Twilio --------------------------------------------------------------------------------

    async def _twilio(self, tenant: Tenant, since: timedelta | None, report: PassReport) -> None:
        settings = self._settings
        credentials = tenant.twilio_credentials()
        assert credentials is not None
        account_sid, token, number = credentials
        lists = TwilioLists(self._session, settings.twilio_api_url, account_sid, token)
        key = self._keys.reconcile_watermark(tenant.slug, twilio.PROVIDER)
        now = utcnow()
        if since is not None:
            cursor = TwilioCursor(since=whole_second(now - since))
        else:
            fresh = TwilioCursor(since=whole_second(now - settings.reconcile_lookback))
            cursor = await self._load(key, fresh)
            if cursor.since < fresh.since and cursor.next_uri is None:
                cursor = fresh  # left for longer than the lookback: what is older stays
        window = twilio_window(cursor, now, settings.reconcile_grace)
        uri = window.next_uri or lists.first_page(
            number, window.since, settings.reconcile_page_size
        )
        taken: list[tuple[tuple[Any, str], InboundMessage]] = []
        after = window
        for _ in range(settings.reconcile_max_pages):
            raw, next_uri = await lists.page(uri)
            items, messages = _read_twilio(raw, tenant.slug)
            verdict, after = twilio_page(items, window, next_uri=next_uri)
            taken += [
                ((items[i].date_sent, items[i].sid), m) for i in verdict.take if (m := messages[i])
            ]
            if not verdict.more or next_uri is None:
                break
            uri, window = next_uri, after
        else:
            log.info("reconcile_pages_bound", tenant=tenant.slug, provider="twilio")
        taken.sort(key=lambda pair: pair[0])
        await self._publish([m for _, m in taken], report)
        if since is None and self._publisher is not None:
            await self._save(key, after)

    # --- shared --------------------------------------------------------------------------------

    async def _publish(self, messages: list[InboundMessage], report: PassReport) -> None:
        publisher = self._publisher
        for message in messages:
            conversation = message.conversation
            if await self._redis.exists(
                self._keys.processed(message)
            ) or await self._untagged.applied(message):
                outcome = ALREADY_PROCESSED
            elif publisher is None:
                outcome = DRY_RUN
            else:
                await publisher.publish(
                    publisher.topology.messages_for(conversation.key),
                    encode(message),
                    message_id=message.message_id,
                    correlation_id=message.message_id,
                )
                outcome = PUBLISHED
                metrics.RECONCILE_RECOVERED.labels(conversation.provider).inc()
                log.info(
                    "reconcile_published",
                    correlation_id=message.message_id,
                    tenant=conversation.tenant,
                    provider=conversation.provider,
                )
            report.found.append(
                Found(
                    tenant=conversation.tenant,
                    provider=conversation.provider,
                    message_id=message.message_id,
                    client_id=conversation.client_id,
                    text=message.text,
                    outcome=outcome,
                )
            )

    async def _load(self, key: str, default: M) -> M:
        raw = await self._redis.get(key)
        if raw is None:
            return default
        try:
            return type(default).model_validate_json(raw)
        except ValidationError:
            log.error("reconcile_cursor_unreadable", key=key)
            return default

    async def _save(self, key: str, cursor: BaseModel) -> None:
        await self._redis.set(key, cursor.model_dump_json())


def _channels(tenant: Tenant) -> list[str]:
    found = []
    if tenant.chat2desk_api_token and tenant.chat2desk_api_token.get_secret_value():
        found.append(chat2desk.PROVIDER)
    if tenant.twilio_credentials() is not None:
        found.append(twilio.PROVIDER)
    return found


def _read_chat2desk(
    raw: list[dict[str, Any]], tenant: str
) -> tuple[list[Chat2DeskItem], list[InboundMessage | None]]:
    """Every item that has an id and a time moves the cursor; only a valid one is taken."""
    items: list[Chat2DeskItem] = []
    messages: list[InboundMessage | None] = []
    for entry in raw:
        try:
            listed = chat2desk.ListedMessage.model_validate(entry)
            item, message = listed.item(), listed.inbound(tenant)
        except (ValidationError, ValueError, TypeError):
            try:
                item = Chat2DeskItem(
                    id=int(entry["id"]),
                    type="unreadable",
                    created=parse_chat2desk_time(str(entry["created"])),
                )
            except (KeyError, ValueError, TypeError):
                continue
            if entry.get("type", "from_client") == "from_client":
                log.error("reconcile_item_unreadable", tenant=tenant, message_id=item.id)
            message = None
        items.append(item)
        messages.append(message)
    return items, messages


def _read_twilio(
    raw: list[dict[str, Any]], tenant: str
) -> tuple[list[TwilioItem], list[InboundMessage | None]]:
    items: list[TwilioItem] = []
    messages: list[InboundMessage | None] = []
    for entry in raw:
        try:
            listed = twilio.ListedMessage.model_validate(entry)
            item, message = listed.item(), listed.inbound(tenant)
        except (ValidationError, ValueError, TypeError):
            if entry.get("direction") == "inbound":
                log.error("reconcile_item_unreadable", tenant=tenant, message_id=entry.get("sid"))
            continue
        items.append(item)
        messages.append(message)
    return items, messages
