"""`orderbot tenants add|list|update|disable|reencrypt|new-key`.

Every failure is one line on stderr and a nonzero status; no secret is ever
printed, and a secret can be passed without showing up in `ps` or shell history.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import asyncpg
from pydantic import ValidationError

from orderbot.config.secret_box import SecretBox, UnreadableSecret, new_key
from orderbot.config.settings import Settings
from orderbot.tenancy import store as tenant_store

_SECRETS = (
    "chat2desk_api_token",
    "chat2desk_webhook_token",
    "twilio_auth_token",
    "operator_api_key",
)
_FIELDS = (
    "name",
    *_SECRETS,
    "twilio_account_sid",
    "twilio_whatsapp_from",
    "webhook_rate_limit_customer",
    "send_rate_limit",
    "chat2desk_webhook_signature",
    "phone_region",
    "phone_regions_allowed",
    "chat2desk_operator_group_id",
    "business_name",
    "delivery_minutes",
)


class CliError(Exception):
    """One line for the operator; the status is 1 unless said otherwise."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _secret_value(value: str, option: str) -> str:
    """`env:NAME`, `file:PATH`, `-` (one line of stdin), or the value itself."""
    if value == "-":
        return sys.stdin.readline().strip()
    if value.startswith("env:"):
        name = value.removeprefix("env:")
        if name not in os.environ:
            raise CliError(f"--{option}: environment variable {name} is not set", 2)
        return os.environ[name]
    if value.startswith("file:"):
        try:
            return Path(value.removeprefix("file:")).read_text().strip()
        except OSError as exc:
            raise CliError(f"--{option}: cannot read the file: {exc.strerror}", 2) from None
    return value


def _changes(args: argparse.Namespace) -> tenant_store.TenantChanges:
    values: dict[str, object] = {}
    for field in _FIELDS:
        value = getattr(args, field)
        if value is None:
            continue
        if field in _SECRETS:
            value = _secret_value(value, field.replace("_", "-"))
        values[field] = value
    if getattr(args, "enable", False):
        values["active"] = True
    try:
        return tenant_store.TenantChanges.model_validate(values)
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        option = "--" + str(first["loc"][0]).replace("_", "-")
        raise CliError(f"{option}: {first['msg']}", 2) from None


def _check_slug(slug: str) -> None:
    try:
        tenant_store.TenantSlug(slug=slug)
    except ValidationError:
        raise CliError("the slug may hold only a-z, 0-9, - and _ (at most 63)", 2) from None


def _box(settings: Settings) -> SecretBox:
    if settings.orderbot_master_key is None:
        raise CliError(
            "ORDERBOT_MASTER_KEY is not set: tenant credentials are encrypted with it "
            "(`orderbot tenants new-key` makes one)",
            2,
        )
    return SecretBox(settings.orderbot_master_key.get_secret_value())


async def run_tenants(settings: Settings, args: argparse.Namespace) -> int:
    command = args.tenants_command
    try:
        if command == "new-key":
            print(new_key())
            return 0
        if command == "add":
            _check_slug(args.slug)  # before any connection: a typo is the likelier mistake
        box = _box(settings) if command in ("add", "update", "reencrypt") else None
        changes = _changes(args) if command in ("add", "update") else None
        try:
            conn = await asyncpg.connect(
                settings.database_url,
                timeout=10,
                statement_cache_size=settings.database_statement_cache_size,
            )
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise CliError(f"cannot reach the database at DATABASE_URL: {exc}") from None
        try:
            await _run(conn, args, box, changes)
        finally:
            await conn.close()
    except CliError as exc:
        print(f"orderbot tenants {command}: {exc}", file=sys.stderr)
        return exc.status
    except asyncpg.UndefinedTableError:
        print(
            f"orderbot tenants {command}: no tenants table: run `orderbot migrate`", file=sys.stderr
        )
        return 1
    return 0


async def _run(
    conn: asyncpg.Connection,
    args: argparse.Namespace,
    box: SecretBox | None,
    changes: tenant_store.TenantChanges | None,
) -> None:
    command = args.tenants_command
    try:
        if command == "add" and box and changes:
            await tenant_store.add(conn, args.slug, changes, box)
            print(f"added tenant {args.slug}")
        elif command == "update" and box and changes:
            await tenant_store.update(conn, args.slug, changes, box)
            print(f"updated tenant {args.slug}")
        elif command == "disable":
            await tenant_store.update(
                conn, args.slug, tenant_store.TenantChanges(active=False), None
            )
            print(f"disabled tenant {args.slug}")
        elif command == "reencrypt" and box:
            print(f"re-encrypted {await tenant_store.reencrypt(conn, box)} tenant(s)")
        elif command == "list":
            _print(await tenant_store.listing(conn), as_json=args.json)
    except ValidationError:
        raise CliError("the slug may hold only a-z, 0-9, - and _ (at most 63)", 2) from None
    except (
        tenant_store.TenantExists,
        tenant_store.TenantNotFound,
        tenant_store.TenantConflict,
    ) as exc:
        raise CliError(str(exc)) from None
    except UnreadableSecret:
        raise CliError(
            "a stored secret is not readable with any key of ORDERBOT_MASTER_KEY; nothing changed"
        ) from None


def _print(rows: list[dict[str, object]], *, as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return
    if not rows:
        print("no tenants in the table (the settings' TENANT is served from the settings)")
        return
    header = ("SLUG", "NAME", "ACTIVE", "CHANNELS", "LIMITS T/C/S", "UPDATED")
    table = [
        (
            str(row["slug"]),
            str(row["name"]),
            "yes" if row["active"] else "no",
            ", ".join(
                channel
                for channel, on in (
                    ("chat2desk", row["chat2desk"]),
                    (f"twilio {row['twilio_whatsapp_from']}", row["twilio"]),
                )
                if on
            )
            or "-",
            "/".join(
                str(row[k] or "-")
                for k in (
                    "webhook_rate_limit_customer",
                    "send_rate_limit",
                )
            ),
            str(row["updated_at"])[:19],
        )
        for row in rows
    ]
    widths = [max(len(r[i]) for r in (header, *table)) for i in range(len(header))]
    for line in (header, *table):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
