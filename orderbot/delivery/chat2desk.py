"""Chat2Desk's send API: POST /v1/messages with the token in `Authorization`.

Chat2Desk answers a send with the new message's id (`{"data": {"message_id": …}}`) and
later posts the same message to the webhook as an `outbox` event, which is how operators'
messages arrive too. The id is remembered (orderbot/conversation/handoff.py) so the worker
knows that event for the bot's own and does not take it for an operator stepping in.
"""

from __future__ import annotations

from typing import NoReturn

import aiohttp
import orjson
import structlog
from multidict import CIMultiDict
from yarl import URL

from orderbot.config.secret_forms import expand, mask
from orderbot.conversation.handoff import OwnMessages
from orderbot.delivery.sender import classify_status, parse_retry_after
from orderbot.envelopes import Conversation
from orderbot.errors import PermanentSendError, TransientSendError
from orderbot.runtime import metrics

log = structlog.get_logger(__name__)

_OK, _TRANSIENT, _PERMANENT = (
    metrics.SENDS.labels("chat2desk", outcome) for outcome in ("ok", "transient", "permanent")
)


class Chat2DeskSender:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_url: str,
        token: str,
        own: OwnMessages | None = None,
    ) -> None:
        self._session = session
        # Built once: a str URL is parsed and a dict of headers copied on every send.
        self._url = URL(f"{api_url.rstrip('/')}/v1/messages")
        self._headers = CIMultiDict({"Authorization": token, "Content-Type": "application/json"})
        self._secret_forms = expand([token])
        self._own = own

    async def send(self, conversation: Conversation, text: str) -> str | None:
        body: dict[str, object] = {
            "client_id": _as_number(conversation.client_id),
            "text": text,
            "type": "to_client",
        }
        if conversation.transport:
            body["transport"] = conversation.transport
        if conversation.channel_id:
            body["channel_id"] = _as_number(conversation.channel_id)
        try:
            async with self._session.post(
                self._url,
                data=orjson.dumps(body),
                headers=self._headers,
            ) as response:
                if response.status >= 300:
                    await self._refused(response)
                _OK.inc()
                try:
                    answer = await response.read()
                except (TimeoutError, aiohttp.ClientError):
                    answer = b""  # sent all the same: sending again would say it twice
        except (TimeoutError, aiohttp.ClientError) as exc:
            detail = str(exc) or type(exc).__name__
            _TRANSIENT.inc()
            raise TransientSendError(f"chat2desk unreachable: {detail}") from exc
        sent_id = _message_id(answer)
        if self._own is None:
            return sent_id
        if sent_id is None:
            log.warning("chat2desk_send_without_message_id", client_id=conversation.client_id)
            return None
        self._own.remember(conversation, sent_id)
        return sent_id

    async def _refused(self, response: aiohttp.ClientResponse) -> NoReturn:
        failure = classify_status(response.status)
        # A provider may echo the request's headers; the reason ends up in logs and DLQ
        # headers, so the token must not survive into it.
        answer = await response.text(errors="replace")
        detail = mask(answer, self._secret_forms)[:300]
        reason = f"chat2desk answered {response.status}: {detail}"
        if failure is PermanentSendError:
            _PERMANENT.inc()
            raise PermanentSendError(reason, status=response.status)
        _TRANSIENT.inc()
        raise TransientSendError(
            reason,
            status=response.status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )


def _message_id(answer: bytes) -> str | None:
    """`data.message_id` of a send's answer; None when the answer has no such field."""
    try:
        body = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    data = body.get("data") if isinstance(body, dict) else None
    value = data.get("message_id") if isinstance(data, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None


def _as_number(value: str) -> int | str:
    """Chat2Desk ids are integers; we carry them as strings so other providers fit."""
    return int(value) if value.isdigit() else value
