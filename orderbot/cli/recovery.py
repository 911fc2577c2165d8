"""`orderbot reconcile` and `orderbot chat2desk webhooks [enable ID | register URL]`.

The report goes to stdout (one JSON object a line with --json); log lines go to stderr.
A webhook's URL holds our secret token, so every URL shown is masked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator

from orderbot.config.secret_forms import REDACTED, expand, mask
from orderbot.config.settings import Settings, parse_duration
from orderbot.recovery.chat2desk import Chat2DeskLists, Webhook
from orderbot.recovery.errors import ListUnavailable
from orderbot.recovery.reconciler import Reconciler
from orderbot.runtime.resources import open_http, open_redis
from orderbot.tenancy.directory import Tenant, TenantDirectory, open_tenant_directory

# What a later operator hand-off needs besides the customers' messages: our own and the
# operators' messages, and the end of a dialog.
WEBHOOK_EVENTS = ["inbox", "outbox", "close_dialog"]


class CliError(Exception):
    """One line for the operator, status 1."""


async def run_recovery(settings: Settings, args: argparse.Namespace) -> int:
    try:
        async with _directory(settings) as tenants:
            if args.command == "reconcile":
                return await _reconcile(settings, tenants, args)
            return await _webhooks(settings, tenants, args)
    except CliError as exc:
        print(f"orderbot {args.command}: {exc}", file=sys.stderr)
        return 1


@contextlib.asynccontextmanager
async def _directory(settings: Settings) -> AsyncIterator[TenantDirectory]:
    async with open_tenant_directory(settings, "cli") as tenants:
        never = asyncio.Event()
        try:
            async with asyncio.timeout(10):
                await tenants.wait_loaded(never)
        except TimeoutError:
            raise CliError("cannot read the tenants table at DATABASE_URL") from None
        yield tenants


async def _reconcile(settings: Settings, tenants: TenantDirectory, args: argparse.Namespace) -> int:
    from orderbot.amqp.link import BrokerLink

    try:
        since = parse_duration(args.since) if args.since else None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.tenant and tenants.get(args.tenant) is None:
        raise CliError(f"unknown tenant {args.tenant!r}")
    async with contextlib.AsyncExitStack() as stack:
        redis = await stack.enter_async_context(open_redis(settings))
        session = await stack.enter_async_context(open_http(settings))
        broker = None
        if not args.dry_run:
            broker = await stack.enter_async_context(BrokerLink(settings, "cli"))
            try:
                async with asyncio.timeout(settings.publish_timeout.total_seconds() * 2):
                    await broker.wait_connected()
            except TimeoutError:
                raise CliError("cannot reach the broker at AMQP_URL") from None
        reconciler = Reconciler(settings, redis, session, tenants, broker)
        report = await reconciler.run_pass(tenant=args.tenant, since=since, check_webhooks=False)
    for found in report.found:
        if args.json:
            print(json.dumps(found.as_dict(), ensure_ascii=False))
        else:
            text = found.text.replace("\n", " ")[:40]
            print(
                f"{found.tenant}  {found.provider}  {found.client_id}  {found.message_id}  "
                f"{found.outcome}  {text}"
            )
    for failure in report.failures:
        print(f"orderbot reconcile: {failure}", file=sys.stderr)
    if not args.json:
        counts = {o: sum(1 for f in report.found if f.outcome == o) for o in _OUTCOMES}
        print(
            f"found {len(report.found)} message(s): {counts['published']} published, "
            f"{counts['already_processed']} already processed, {counts['dry_run']} not published "
            "(dry run)"
        )
    return 1 if report.failures else 0


_OUTCOMES = ("published", "already_processed", "dry_run")


def _chat2desk_tenants(tenants: TenantDirectory, slug: str | None) -> list[Tenant]:
    chosen = [
        t
        for t in tenants.all()
        if (slug is None or t.slug == slug)
        and t.chat2desk_api_token is not None
        and t.chat2desk_api_token.get_secret_value()
    ]
    if not chosen:
        raise CliError(
            f"no tenant {slug!r} with a Chat2Desk API token"
            if slug
            else "no tenant has a Chat2Desk API token"
        )
    return chosen


async def _webhooks(settings: Settings, tenants: TenantDirectory, args: argparse.Namespace) -> int:
    chosen = _chat2desk_tenants(tenants, getattr(args, "tenant", None))
    command = args.webhooks_command
    if command is not None and len(chosen) > 1:
        raise CliError("more than one tenant uses Chat2Desk: name one with --tenant")
    async with open_http(settings) as session:

        def lists(tenant: Tenant) -> Chat2DeskLists:
            assert tenant.chat2desk_api_token is not None
            token = tenant.chat2desk_api_token.get_secret_value()
            return Chat2DeskLists(session, settings.chat2desk_api_url, token)

        try:
            if command == "enable":
                return await _enable(lists(chosen[0]), args.id)
            if command == "register":
                hook = await lists(chosen[0]).register(args.url, WEBHOOK_EVENTS, "orderbot")
                print(f"registered webhook {hook.id if hook else '(no id given)'}")
                return 0
            disabled = 0
            for tenant in chosen:
                for hook in await lists(tenant).webhooks():
                    disabled += hook.disabled
                    _print_hook(tenant, hook, as_json=args.json)
        except ListUnavailable as exc:
            raise CliError(str(exc)) from None
    return 1 if disabled else 0


async def _enable(lists: Chat2DeskLists, hook_id: int) -> int:
    found = [hook for hook in await lists.webhooks() if hook.id == hook_id]
    if not found:
        raise CliError(f"no webhook {hook_id}")
    await lists.enable(found[0])
    print(f"enabled webhook {hook_id}")
    return 0


def _print_hook(tenant: Tenant, hook: Webhook, *, as_json: bool) -> None:
    url = _masked_url(hook.url, tenant)
    errors = [{"text": e.text, "created_at": e.created_at} for e in hook.errors]
    if as_json:
        row = {
            "tenant": tenant.slug,
            "id": hook.id,
            "name": hook.name,
            "url": url,
            "events": hook.events,
            "status": hook.status,
            "errors": errors,
        }
        print(json.dumps(row, ensure_ascii=False))
        return
    last = f"  last error: {errors[-1]['created_at']} {errors[-1]['text']}" if errors else ""
    print(f"{tenant.slug}  {hook.id}  {hook.status}  {','.join(hook.events)}  {url}{last}")


def _masked_url(url: str, tenant: Tenant) -> str:
    """The URL without its token: the last path segment of our webhook paths, whatever
    token it is (a rotated one is no longer among the tenant's secrets)."""
    head, marker, rest = url.partition("/webhook/chat2desk/")
    if marker and rest:
        path, _, query = rest.partition("?")
        kept = path.rstrip("/").rsplit("/", 1)[0] + "/" if "/" in path.rstrip("/") else ""
        url = f"{head}{marker}{kept}{REDACTED}" + (f"?{query}" if query else "")
    return mask(url, expand(tenant.secrets()))
