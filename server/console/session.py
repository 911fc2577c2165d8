"""The console's session: a signed cookie that says which tenant's operator signed in.

The operator's API key is checked once, at sign-in, and never kept: the cookie holds the
tenant, a random session id, the CSRF token of the session's forms, its expiry, and a
fingerprint of the key (a hash of its hash), so that rotating or revoking the key ends
every session made with it. The cookie is signed (HMAC-SHA256) with the first of
CONSOLE_SESSION_SECRET's secrets and accepted with any of them: a new secret is put first,
the old one kept until the sessions it signed have expired, then dropped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from orderbot.config.settings import Settings
from orderbot.tenancy.directory import TenantDirectory, operator_key_hash

COOKIE = "orderbot_console"
_CONTEXT = b"orderbot-console-session\x00"


class ConsoleSession(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    tenant: str
    name: str
    key: str  # fingerprint of the key it was made with
    csrf: str
    expires: int  # Unix seconds

    @classmethod
    def start(cls, *, tenant: str, name: str, api_key: str, ttl: float) -> ConsoleSession:
        return cls(
            id=secrets.token_urlsafe(18),
            tenant=tenant,
            name=name,
            key=key_fingerprint(operator_key_hash(api_key)),
            csrf=secrets.token_urlsafe(24),
            expires=int(time.time() + ttl),
        )

    def remaining(self) -> int:
        return max(0, self.expires - int(time.time()))

    def csrf_matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


def key_fingerprint(key_sha256: str) -> str:
    """Names a key without being one: the cookie is signed, not secret."""
    return hashlib.sha256(b"console-key\x00" + key_sha256.encode()).hexdigest()[:32]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), _CONTEXT + payload, hashlib.sha256).digest()


def seal(session: ConsoleSession, secrets_: Sequence[str]) -> str:
    payload = orjson.dumps(session.model_dump())
    return f"{_b64(payload)}.{_b64(_mac(secrets_[0], payload))}"


def unseal(value: str | None, secrets_: Sequence[str]) -> ConsoleSession | None:
    """The session of a cookie signed with any of the secrets and not expired, or None."""
    if not value or len(value) > 4096 or value.count(".") != 1:
        return None
    encoded, signature = value.split(".")
    try:
        payload, given = _unb64(encoded), _unb64(signature)
    except ValueError:
        return None
    if not any(hmac.compare_digest(given, _mac(secret, payload)) for secret in secrets_):
        return None
    try:
        session = ConsoleSession.model_validate(orjson.loads(payload))
    except (orjson.JSONDecodeError, ValidationError):
        return None
    return session if session.remaining() > 0 else None


def current_key_fingerprints(
    settings: Settings, tenants: TenantDirectory | None, tenant: str
) -> set[str]:
    """The fingerprints of the keys that open `tenant`'s console right now: a session
    made with any other key (rotated, or its tenant disabled) is no longer valid."""
    found: set[str] = set()
    key = settings.operator_api_key
    if tenant == settings.tenant and key is not None and key.get_secret_value():
        found.add(key_fingerprint(operator_key_hash(key.get_secret_value())))
    if tenants is not None and settings.orderbot_master_key is not None:
        row = tenants.get(tenant)
        if row is not None and row.active and row.operator_api_key_sha256:
            found.add(key_fingerprint(row.operator_api_key_sha256))
    return found
