"""Tenants of a test's own in the `tenants` table, each with an operator key, and a wait
until a server's directory has read them."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from orderbot.config.secret_box import SecretBox
from orderbot.tenancy import store as tenant_store
from server.keys import TENANTS


@dataclass(frozen=True)
class TenantRow:
    slug: str
    operator_key: str

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.operator_key}"}


async def add_tenant(db: asyncpg.Connection, box: SecretBox, label: str) -> TenantRow:
    tag = uuid.uuid4().hex
    row = TenantRow(slug=f"{label}-{tag[:10]}", operator_key=f"ops-{label}-{tag}")
    changes = tenant_store.TenantChanges(
        name=f"Business {label}", operator_api_key=row.operator_key
    )
    await tenant_store.add(db, row.slug, changes, box)
    return row


async def wait_known(app: web.Application, *rows: TenantRow, timeout: float = 15) -> None:
    directory = app[TENANTS]
    async with asyncio.timeout(timeout):
        while not (directory.loaded and all(directory.get(r.slug) for r in rows)):
            await asyncio.sleep(0.02)


async def remove(db: asyncpg.Connection, *rows: TenantRow) -> None:
    await db.execute("DELETE FROM tenants WHERE slug = ANY($1::text[])", [r.slug for r in rows])
