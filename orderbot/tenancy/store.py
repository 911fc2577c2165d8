"""Writing the `tenants` table: what `orderbot tenants ...` does.

Secrets are encrypted before they reach SQL, so neither the table nor a statement
log ever holds one in clear. The trigger on the table tells running processes.
"""

from __future__ import annotations

from typing import Any, Literal

import asyncpg
import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator

from orderbot.config.secret_box import SecretBox
from orderbot.tenancy.directory import (
    SLUG_PATTERN,
    operator_key_hash,
    tenant_from_row,
    webhook_token_hash,
)


class TenantExists(Exception):
    pass


class TenantNotFound(Exception):
    pass


class TenantConflict(Exception):
    """Another tenant already uses this webhook token or WhatsApp number."""


class TenantChanges(BaseModel):
    """The columns an add or update sets; None leaves a column as it is."""

    model_config = ConfigDict(frozen=True)

    name: str | None = Field(default=None, min_length=1, max_length=200)
    active: bool | None = None
    chat2desk_api_token: str | None = Field(default=None, min_length=1)
    chat2desk_webhook_token: str | None = Field(default=None, min_length=8, pattern=r"^[^/\s]+$")
    twilio_account_sid: str | None = Field(default=None, min_length=1, max_length=64)
    twilio_auth_token: str | None = Field(default=None, min_length=1)
    twilio_whatsapp_from: str | None = Field(default=None, min_length=1, max_length=64)
    webhook_rate_limit_customer: int | None = Field(default=None, ge=1)
    send_rate_limit: int | None = Field(default=None, ge=1)
    # The same rule as OPERATOR_API_KEY: a short key can be guessed.
    operator_api_key: str | None = Field(default=None, min_length=16, max_length=512)
    chat2desk_webhook_signature: Literal["off", "check", "require"] | None = None
    phone_region: str | None = Field(default=None, pattern=r"^[A-Za-z]{2}$")
    # Comma-separated in the CLI; an empty list takes the home region's numbers alone.
    phone_regions_allowed: tuple[str, ...] | None = None
    chat2desk_operator_group_id: str | None = Field(default=None, pattern=r"^\d{1,20}$")
    business_name: str | None = Field(default=None, min_length=1, max_length=100)
    delivery_minutes: int | None = Field(default=None, ge=1, le=1440)

    @field_validator("phone_regions_allowed", mode="before")
    @classmethod
    def _region_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(code.strip() for code in value.split(",") if code.strip())
        return value

    @field_validator("phone_region", mode="after")
    @classmethod
    def _known_region(cls, value: str | None) -> str | None:
        """Checked here, not first by a worker: a region libphonenumber does not know
        would make every dialog of the tenant fail at the phone step."""
        return None if value is None else _phone_region(value)

    @field_validator("phone_regions_allowed", mode="after")
    @classmethod
    def _known_regions(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else tuple(_phone_region(code) for code in value)

    def columns(self, box: SecretBox | None) -> dict[str, Any]:
        """Column values, secrets encrypted (a box is needed only when one is given)."""
        plain = (
            "name",
            "active",
            "twilio_account_sid",
            "twilio_whatsapp_from",
            "chat2desk_webhook_signature",
            "phone_region",
            "chat2desk_operator_group_id",
            "business_name",
            "delivery_minutes",
        )
        limits = ("webhook_rate_limit_customer", "send_rate_limit")
        values: dict[str, Any] = {
            name: getattr(self, name)
            for name in (*plain, *limits)
            if getattr(self, name) is not None
        }
        if self.phone_regions_allowed is not None:
            values["phone_regions_allowed"] = list(self.phone_regions_allowed)
        if self.operator_api_key is not None:  # only its hash: it opens the API, not a box
            values["operator_api_key_sha256"] = operator_key_hash(self.operator_api_key)
        secrets = (self.chat2desk_api_token, self.twilio_auth_token, self.chat2desk_webhook_token)
        if box is None:
            if any(secret is not None for secret in secrets):
                raise ValueError("a secret needs the master key")
            return values
        if self.chat2desk_api_token is not None:
            values["chat2desk_api_token_enc"] = box.encrypt(self.chat2desk_api_token)
        if self.twilio_auth_token is not None:
            values["twilio_auth_token_enc"] = box.encrypt(self.twilio_auth_token)
        if self.chat2desk_webhook_token is not None:
            values["chat2desk_webhook_token_enc"] = box.encrypt(self.chat2desk_webhook_token)
            values["chat2desk_webhook_token_sha256"] = webhook_token_hash(
                self.chat2desk_webhook_token
            )
        return values


def _phone_region(value: str) -> str:
    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown phone region {value!r} (an ISO 3166 code such as KG)")
    return region


class TenantSlug(BaseModel):
    slug: str = Field(pattern=SLUG_PATTERN)


_SECRET_COLUMNS = (
    "chat2desk_api_token_enc",
    "chat2desk_webhook_token_enc",
    "twilio_auth_token_enc",
)


def _conflict(exc: asyncpg.UniqueViolationError) -> Exception:
    if exc.constraint_name == "tenants_pkey":
        return TenantExists("a tenant with this slug exists")
    constraint = exc.constraint_name or ""
    what = (
        "webhook token"
        if "webhook" in constraint
        else "operator API key"
        if "operator" in constraint
        else "WhatsApp number"
    )
    return TenantConflict(f"another tenant already uses this {what}")


async def add(conn: asyncpg.Connection, slug: str, changes: TenantChanges, box: SecretBox) -> None:
    TenantSlug(slug=slug)
    values = {"slug": slug, "name": slug, **changes.columns(box)}
    names = list(values)
    sql = (
        f"INSERT INTO tenants ({', '.join(names)}) "  # noqa: S608 (names are ours, not input)
        f"VALUES ({', '.join(f'${i}' for i in range(1, len(names) + 1))})"
    )
    try:
        await conn.execute(sql, *values.values())
    except asyncpg.UniqueViolationError as exc:
        raise _conflict(exc) from None


async def update(
    conn: asyncpg.Connection, slug: str, changes: TenantChanges, box: SecretBox | None
) -> None:
    values = changes.columns(box)
    assignments = [f"{name} = ${i}" for i, name in enumerate(values, start=2)]
    sql = (
        f"UPDATE tenants SET {', '.join([*assignments, 'updated_at = now()'])} "  # noqa: S608
        "WHERE slug = $1"
    )
    try:
        status = await conn.execute(sql, slug, *values.values())
    except asyncpg.UniqueViolationError as exc:
        raise _conflict(exc) from None
    if status == "UPDATE 0":
        raise TenantNotFound(f"no tenant {slug!r}")


async def listing(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every tenant without its secrets: only whether each one is set."""
    rows = await conn.fetch("SELECT * FROM tenants ORDER BY slug")
    return [
        {
            "slug": row["slug"],
            "name": row["name"],
            "active": row["active"],
            "chat2desk": row["chat2desk_api_token_enc"] is not None,
            "chat2desk_webhook": row["chat2desk_webhook_token_sha256"] is not None,
            "twilio_account_sid": row["twilio_account_sid"],
            "twilio_whatsapp_from": row["twilio_whatsapp_from"],
            "twilio": row["twilio_auth_token_enc"] is not None,
            "webhook_rate_limit_customer": row["webhook_rate_limit_customer"],
            "send_rate_limit": row["send_rate_limit"],
            "chat2desk_webhook_signature": row["chat2desk_webhook_signature"],
            "phone_region": row["phone_region"],
            "phone_regions_allowed": row["phone_regions_allowed"],
            "chat2desk_operator_group_id": row["chat2desk_operator_group_id"],
            "business_name": row["business_name"],
            "delivery_minutes": row["delivery_minutes"],
            "operator_api": row["operator_api_key_sha256"] is not None,
            "updated_at": row["updated_at"].isoformat(),
        }
        for row in rows
    ]


async def reencrypt(conn: asyncpg.Connection, box: SecretBox) -> int:
    """Re-encrypt every secret with the first master key; UnreadableSecret aborts it all."""
    count = 0
    async with conn.transaction():
        rows = await conn.fetch("SELECT * FROM tenants ORDER BY slug FOR UPDATE")
        for row in rows:
            tenant_from_row(row, box)  # every secret readable, or nothing is changed
            rotated = [box.rotate(row[c]) if row[c] else None for c in _SECRET_COLUMNS]
            await conn.execute(
                "UPDATE tenants SET chat2desk_api_token_enc = $2, chat2desk_webhook_token_enc = $3,"
                " twilio_auth_token_enc = $4, updated_at = now() WHERE slug = $1",
                row["slug"],
                *rotated,
            )
            count += 1
    return count
