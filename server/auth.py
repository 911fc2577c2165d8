"""Who is calling the operator API: a bearer API key, mapped to a principal.

Handlers never read a global tenant: they act for the principal a key maps to, so giving
each tenant (and later each person or tool) its own key is a change here only (issue 4).
Keys are compared in constant time, and a key is never logged or echoed in an error.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from orderbot.settings import Settings


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    name: str  # recorded as the actor of the status changes it makes
    role: Literal["operator"] = "operator"


class KeyAuthenticator:
    def __init__(self, keys: Mapping[str, Principal]) -> None:
        self._keys = [(key.encode(), principal) for key, principal in keys.items() if key]

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyAuthenticator | None:
        """One key for this deployment's tenant; None when the operator API is disabled."""
        key = settings.operator_api_key
        if key is None or not key.get_secret_value():
            return None
        return cls({key.get_secret_value(): Principal(tenant=settings.tenant, name="operator")})

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal of an ``Authorization: Bearer <key>`` header, or None."""
        token = bearer_token(authorization)
        if token is None:
            return None
        given = token.encode("utf-8", "replace")
        found: Principal | None = None
        for key, principal in self._keys:  # every key compared: timing says nothing
            if hmac.compare_digest(given, key):
                found = principal
        return found


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
