"""The web chat's customer cookie: a random session id and its HMAC under WEBCHAT_SECRET.

No login: whoever holds the cookie is the customer of that chat. The MAC covers the
tenant too, so a cookie of one business's chat names nobody at another's, and a
stranger cannot forge a session id to read or write into someone else's chat: the id
is 128 random bits, the MAC is checked in constant time. Changing the secret logs
every customer out (a new chat starts).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

COOKIE = "orderbot_chat"
MAX_AGE = 30 * 24 * 3600  # a returning customer keeps their chat for a month
_SESSION = re.compile(r"^[A-Za-z0-9_-]{22}$")
_MAC_LENGTH = 32


def new_session() -> str:
    return secrets.token_urlsafe(16)


def _mac(secret: str, tenant: str, session: str) -> str:
    digest = hmac.new(
        secret.encode(), b"webchat\0" + tenant.encode() + b"\0" + session.encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:_MAC_LENGTH]


def sign(secret: str, tenant: str, session: str) -> str:
    return f"{session}.{_mac(secret, tenant, session)}"


def verify(secret: str, tenant: str, value: str) -> str | None:
    """The session id of a valid cookie value, else None."""
    session, dot, mac = value.partition(".")
    if not dot or not _SESSION.match(session) or len(mac) != _MAC_LENGTH:
        return None
    if not hmac.compare_digest(mac.encode(), _mac(secret, tenant, session).encode()):
        return None
    return session
