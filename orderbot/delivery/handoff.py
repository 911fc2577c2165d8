"""Telling the operators that a customer asked for a person.

On Chat2Desk, with an operator group (the tenant's own `chat2desk_operator_group_id`,
else CHAT2DESK_OPERATOR_GROUP_ID), the dialog is transferred to that group:
`GET /v1/messages/{message_id}/transfer_to_group?group_id=…`, the message being the
customer's request, with the tenant's API token. Twilio has no operators of its own,
so HANDOFF_NOTIFY_URL (any provider) is POSTed a JSON note for whatever the operators
watch. Neither is retried past a few quick tries, and neither failing stops the
hand-off: the bot still goes silent (the customer was told a person will answer), the
failure is logged and counted, and the customer's messages stay in the provider's inbox
where operators see them anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import aiohttp
import structlog

from orderbot.config.secret_forms import expand, mask
from orderbot.config.settings import Settings
from orderbot.delivery.sender import classify_status
from orderbot.envelopes import InboundMessage
from orderbot.errors import TransientSendError
from orderbot.runtime import metrics
from orderbot.tenancy.directory import TenantDirectory

log = structlog.get_logger(__name__)

_TRIES = 3
_BACKOFF = 0.2  # seconds, doubled per try: the step holds the customer's lock meanwhile


class Operators:
    def __init__(
        self, settings: Settings, session: aiohttp.ClientSession, tenants: TenantDirectory
    ) -> None:
        self._api = settings.chat2desk_api_url.rstrip("/")
        self._group = settings.chat2desk_operator_group_id
        self._notify_url = settings.handoff_notify_url
        self._session = session
        self._tenants = tenants

    async def call(self, message: InboundMessage) -> None:
        """Ask for a person for this customer, by every way configured; never raises
        for the provider's or the receiver's failure."""
        conversation = message.conversation
        told = False
        tenant = self._tenants.get(conversation.tenant)
        own_group = tenant.chat2desk_operator_group_id if tenant is not None else None
        group = own_group or self._group
        if conversation.provider == "chat2desk" and group is not None:
            told = await self._transfer(message, group)
        if self._notify_url is not None:
            told = await self._notify(message, self._notify_url) or told
        if not told:
            log.warning("handoff_unannounced")

    async def _transfer(self, message: InboundMessage, group: str) -> bool:
        tenant = self._tenants.get(message.conversation.tenant)
        token = tenant.chat2desk_api_token if tenant is not None else None
        if token is None:
            log.error("handoff_transfer_impossible", reason="the tenant has no Chat2Desk token")
            metrics.HANDOFF_CALLS.labels("transfer", "failed").inc()
            return False
        secret = token.get_secret_value()
        url = f"{self._api}/v1/messages/{message.message_id}/transfer_to_group"
        return await self._try(
            "transfer",
            lambda: self._session.get(
                url, params={"group_id": group}, headers={"Authorization": secret}
            ),
            expand([secret]),
        )

    async def _notify(self, message: InboundMessage, url: str) -> bool:
        conversation = message.conversation
        note = {
            "event": "handoff",
            "tenant": conversation.tenant,
            "provider": conversation.provider,
            "client_id": conversation.client_id,
            "message_id": message.message_id,
            "text": message.text,
            "received_at": message.received_at.isoformat(),
        }
        return await self._try("notify", lambda: self._session.post(url, json=note), [])

    async def _try(
        self,
        what: str,
        request: Callable[[], AbstractAsyncContextManager[aiohttp.ClientResponse]],
        secrets: list[str],
    ) -> bool:
        error = ""
        for attempt in range(_TRIES):
            try:
                async with request() as response:
                    if response.status < 300:
                        metrics.HANDOFF_CALLS.labels(what, "ok").inc()
                        log.info(f"handoff_{what}_done")
                        return True
                    answer = mask(await response.text(errors="replace"), secrets)[:300]
                    error = f"answered {response.status}: {answer}"
                    if classify_status(response.status) is not TransientSendError:
                        break
            except (TimeoutError, aiohttp.ClientError) as exc:
                error = f"unreachable: {exc or type(exc).__name__}"
            if attempt + 1 < _TRIES:
                await asyncio.sleep(_BACKOFF * 2**attempt)
        log.error(f"handoff_{what}_failed", error=error)
        metrics.HANDOFF_CALLS.labels(what, "failed").inc()
        return False
