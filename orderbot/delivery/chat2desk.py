"""Chat2Desk's send API: POST /v1/messages with the token in `Authorization`."""

from __future__ import annotations

import aiohttp
import orjson

from orderbot.config.secret_forms import expand, mask
from orderbot.delivery.sender import classify_status, parse_retry_after
from orderbot.envelopes import Conversation
from orderbot.errors import PermanentSendError, TransientSendError
from orderbot.runtime import metrics

_OK, _TRANSIENT, _PERMANENT = (
    metrics.SENDS.labels("chat2desk", outcome) for outcome in ("ok", "transient", "permanent")
)


class Chat2DeskSender:
    def __init__(self, session: aiohttp.ClientSession, api_url: str, token: str) -> None:
        self._session = session
        self._url = f"{api_url.rstrip('/')}/v1/messages"
        self._token = token
        self._secret_forms = expand([token])

    async def send(self, conversation: Conversation, text: str) -> None:
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
                headers={"Authorization": self._token, "Content-Type": "application/json"},
            ) as response:
                if response.status < 300:
                    _OK.inc()
                    return
                failure = classify_status(response.status)
                # A provider may echo the request's headers; the reason ends up in
                # logs and DLQ headers, so the token must not survive into it.
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
        except (TimeoutError, aiohttp.ClientError) as exc:
            detail = str(exc) or type(exc).__name__
            _TRANSIENT.inc()
            raise TransientSendError(f"chat2desk unreachable: {detail}") from exc


def _as_number(value: str) -> int | str:
    """Chat2Desk ids are integers; we carry them as strings so other providers fit."""
    return int(value) if value.isdigit() else value
