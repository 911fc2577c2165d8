"""Who is calling the operator API: a bearer API key, mapped to a principal.

Handlers never read a global tenant: they act for the principal a key maps to. The
deployment's OPERATOR_API_KEY is its settings tenant's key; each row of `tenants` may
have a key of its own, found by its SHA-256 in the tenant directory (a hash lookup, so
its timing says nothing about stored keys). The settings key is compared in constant
time, and no key is ever logged or echoed in an error.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from orderbot.config.settings import Settings
from orderbot.tenancy.directory import TenantDirectory


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    name: str  # recorded as the actor of the status changes it makes
    role: Literal["operator"] = "operator"


class KeyAuthenticator:
    def __init__(
        self, keys: Mapping[str, Principal], tenants: TenantDirectory | None = None
    ) -> None:
        self._keys = [(key.encode(), principal) for key, principal in keys.items() if key]
        self._tenants = tenants

    @classmethod
    def from_settings(
        cls, settings: Settings, tenants: TenantDirectory | None = None
    ) -> KeyAuthenticator | None:
        """The settings key for this deployment's tenant, and with a tenants table (a
        master key is set) every tenant's own key; None when no key can exist, which
        disables the operator API."""
        key = settings.operator_api_key
        keys: dict[str, Principal] = {}
        if key is not None and key.get_secret_value():
            keys[key.get_secret_value()] = Principal(tenant=settings.tenant, name="operator")
        if settings.orderbot_master_key is None:
            tenants = None
        if not keys and tenants is None:
            return None
        return cls(keys, tenants)

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
        if found is None and self._tenants is not None:
            tenant = self._tenants.by_operator_key(token)
            if tenant is not None and tenant.active:  # a disabled business has no API
                found = Principal(tenant=tenant.slug, name="operator")
        return found


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
