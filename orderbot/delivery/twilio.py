"""Twilio's Messages API for WhatsApp: a form POST with basic auth.

Twilio says what went wrong in a JSON body with its own error code; 429 and code
20429 (too many requests) are worth retrying, as is any 5xx; every other refusal
(an unknown number, a closed 24 h session window, bad credentials) is permanent.
"""

from __future__ import annotations

import aiohttp
import orjson

from orderbot.config.secret_forms import basic_auth_forms, expand, mask
from orderbot.config.settings import Settings
from orderbot.delivery.sender import parse_retry_after
from orderbot.envelopes import Conversation
from orderbot.errors import PermanentSendError, TransientSendError
from orderbot.runtime import metrics

_OK, _TRANSIENT, _PERMANENT = (
    metrics.SENDS.labels("twilio", outcome) for outcome in ("ok", "transient", "permanent")
)
TOO_MANY_REQUESTS = 20429


class TwilioSender:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_url: str,
        account_sid: str,
        auth_token: str,
        sender: str,
        *,
        status_callback: str | None = None,
    ) -> None:
        self._session = session
        self._url = f"{api_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._headers = {"Authorization": aiohttp.encode_basic_auth(account_sid, auth_token)}
        self._secret_forms = expand([auth_token, *basic_auth_forms(account_sid, auth_token)])
        self._from = sender
        self._status_callback = status_callback

    async def send(self, conversation: Conversation, text: str) -> str | None:
        """Returns the new message's SID, which its status callbacks carry."""
        form = {"To": conversation.client_id, "From": self._from, "Body": text}
        if self._status_callback:
            form["StatusCallback"] = self._status_callback
        try:
            async with self._session.post(self._url, data=form, headers=self._headers) as response:
                if response.status < 300:
                    _OK.inc()
                    try:
                        return _sid(await response.text(errors="replace"))
                    except (TimeoutError, aiohttp.ClientError):
                        return None  # sent all the same: sending again would say it twice
                answer = await response.text(errors="replace")
                code = _error_code(answer)
                detail = mask(answer, self._secret_forms)[:300]
                reason = f"twilio answered {response.status} (code {code}): {detail}"
                if response.status == 429 or code == TOO_MANY_REQUESTS or response.status >= 500:
                    _TRANSIENT.inc()
                    raise TransientSendError(
                        reason,
                        status=response.status,
                        retry_after=parse_retry_after(response.headers.get("Retry-After")),
                    )
                _PERMANENT.inc()
                raise PermanentSendError(reason, status=response.status)
        except (TimeoutError, aiohttp.ClientError) as exc:
            _TRANSIENT.inc()
            raise TransientSendError(f"twilio unreachable: {exc or type(exc).__name__}") from exc


def twilio_status_callback(settings: Settings) -> str | None:
    """Where Twilio posts a reply's delivery statuses: PUBLIC_BASE_URL's status hook, the
    URL it signs them for (no history, no callbacks)."""
    if not settings.public_base_url or not settings.history_enabled:
        return None
    return settings.public_base_url.rstrip("/") + "/webhook/twilio/status"


def _sid(answer: str) -> str | None:
    """The created Message resource's `sid`; None if the answer is not one."""
    try:
        body = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    sid = body.get("sid") if isinstance(body, dict) else None
    return sid if isinstance(sid, str) and sid else None


def _error_code(answer: str) -> int | None:
    try:
        body = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, int) else None
