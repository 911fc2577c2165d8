"""The `orderbot` command: one entry point for every process and operator tool.

Only what a command needs is imported, and only once it is chosen: a role's process
reaches its SIGTERM handler (runtime/bootstrap.py) before anything heavy is loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, TextIO

from orderbot.runtime.roles import ROLES

if TYPE_CHECKING:
    from orderbot.config.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orderbot", description="Chat2Desk/Twilio order bot on RabbitMQ."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for role in ROLES:
        sub.add_parser(role.command, help=_ROLE_HELP[role.name])
    sub.add_parser("migrate", help="create the database if missing and apply schema.sql")
    sub.add_parser("run", help="server, worker and outbox-worker together, for development")
    dlq = sub.add_parser("dlq", help="inspect and replay the dead-letter queue")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    held_help = "the held queue (what customers sent past their budget) instead of the DLQ"
    listing = dlq_sub.add_parser("list", help="show parked messages")
    listing.add_argument("--held", action="store_true", help=held_help)
    listing.add_argument("--json", action="store_true", help="one JSON object per message")
    listing.add_argument("--limit", type=int, default=1000)
    replay = dlq_sub.add_parser("replay", help="send parked messages back for processing")
    replay.add_argument("--held", action="store_true", help=held_help)
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every parked message")
    which.add_argument("--id", dest="message_id", help="the message with this id")
    purge = dlq_sub.add_parser("purge", help="delete every parked message")
    purge.add_argument("--held", action="store_true", help=held_help)
    purge.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")
    _tenants_parser(sub)
    docs = sub.add_parser("settings", help="the settings' documentation, from their model")
    form = docs.add_mutually_exclusive_group(required=True)
    form.add_argument("--markdown", action="store_true", help="README's settings table")
    form.add_argument("--env-example", action="store_true", help="the whole .env.example")
    docs.add_argument(
        "--into",
        type=Path,
        metavar="PATH",
        help="write it into PATH instead of printing it (the table: between the "
        "<!-- settings:begin --> and <!-- settings:end --> lines of PATH)",
    )
    _recovery_parser(sub)
    history = sub.add_parser("history", help="the conversation history in PostgreSQL")
    history_sub = history.add_subparsers(dest="history_command", required=True)
    purge_history = history_sub.add_parser(
        "purge", help="delete messages older than HISTORY_RETENTION now"
    )
    purge_history.add_argument(
        "--older-than", metavar="DURATION", help="instead of HISTORY_RETENTION, e.g. 30d"
    )
    return parser


_ROLE_HELP = {
    "server": "the webhook HTTP server",
    "worker": "the dialog worker (consumes `messages`)",
    "outbox_worker": "the reply retry worker (consumes `outbox`)",
}
_HIDDEN_HELP = "(secret: give `env:NAME`, `file:PATH` or `-` for stdin to keep it out of ps)"


def _tenants_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    messages = sub.add_parser("messages", help="the partitioned queues of customer messages")
    messages_sub = messages.add_subparsers(dest="messages_command", required=True)
    messages_sub.add_parser(
        "repartition",
        help="move customer messages from the unpartitioned queue of old, or from "
        "partitions past MESSAGES_PARTITIONS, to their customer's partition",
    )
    tenants = sub.add_parser("tenants", help="the businesses this deployment serves")
    tenants_sub = tenants.add_subparsers(dest="tenants_command", required=True)
    for name, help_ in (("add", "add a tenant"), ("update", "change a tenant's settings")):
        command = tenants_sub.add_parser(name, help=help_)
        command.add_argument("slug", help="short name: a-z, 0-9, - and _")
        command.add_argument("--name", help="display name")
        command.add_argument("--chat2desk-api-token", help=f"send API token {_HIDDEN_HELP}")
        command.add_argument(
            "--chat2desk-webhook-token", help=f"secret of the webhook URL {_HIDDEN_HELP}"
        )
        command.add_argument("--twilio-account-sid")
        command.add_argument("--twilio-auth-token", help=f"{_HIDDEN_HELP}")
        command.add_argument("--twilio-whatsapp-from", help="e.g. whatsapp:+14155238886")
        command.add_argument(
            "--webhook-rate-limit-customer",
            type=int,
            help="a customer's messages processed per minute (the rest is kept in the DLQ)",
        )
        command.add_argument(
            "--chat2desk-webhook-signature",
            choices=("off", "check", "require"),
            help="verify Chat2Desk's X-Signature (default: CHAT2DESK_WEBHOOK_SIGNATURE)",
        )
        command.add_argument("--send-rate-limit", type=int, help="send calls per minute")
        command.add_argument(
            "--phone-region",
            help="region of the customers' national phone forms, e.g. KG (default: PHONE_REGION)",
        )
        command.add_argument(
            "--phone-regions-allowed",
            help="other regions whose numbers are taken, e.g. KZ,RU; '' for none "
            "(default: PHONE_REGIONS_ALLOWED)",
        )
        command.add_argument(
            "--chat2desk-operator-group-id",
            help="Chat2Desk operator group a hand-off is transferred to "
            "(default: CHAT2DESK_OPERATOR_GROUP_ID)",
        )
        command.add_argument(
            "--business-name",
            help="the business's name in the dialog's texts (default: BUSINESS_NAME)",
        )
        command.add_argument(
            "--delivery-minutes",
            type=int,
            help="the delivery promise of the order's acceptance (default: DELIVERY_MINUTES)",
        )
        command.add_argument(
            "--operator-api-key",
            help=f"bearer key of this tenant's /api/ (at least 16 characters) {_HIDDEN_HELP}",
        )
        if name == "update":
            command.add_argument("--enable", action="store_true", help="serve it again")
    listing = tenants_sub.add_parser("list", help="show tenants (never their secrets)")
    listing.add_argument("--json", action="store_true", help="one JSON object per tenant")
    disable = tenants_sub.add_parser("disable", help="stop serving a tenant")
    disable.add_argument("slug")
    tenants_sub.add_parser("reencrypt", help="re-encrypt every secret with the first master key")
    tenants_sub.add_parser("new-key", help="print a new master key")


def _recovery_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reconcile = sub.add_parser(
        "reconcile", help="read the providers' message lists once and publish what was missed"
    )
    reconcile.add_argument("--since", help="read from this long ago (e.g. 2h), not the cursors")
    reconcile.add_argument("--tenant", help="only this tenant (slug)")
    reconcile.add_argument("--dry-run", action="store_true", help="report, publish nothing")
    reconcile.add_argument("--json", action="store_true", help="one JSON object per message")
    chat2desk = sub.add_parser("chat2desk", help="Chat2Desk account tools")
    chat2desk_sub = chat2desk.add_subparsers(dest="chat2desk_command", required=True)
    webhooks = chat2desk_sub.add_parser(
        "webhooks", help="list the account's webhooks (exit 1 when one is disabled)"
    )
    webhooks.add_argument("--tenant", help="only this tenant (slug)")
    webhooks.add_argument("--json", action="store_true", help="one JSON object per webhook")
    hooks_sub = webhooks.add_subparsers(dest="webhooks_command")
    enable = hooks_sub.add_parser("enable", help="turn a disabled webhook back on")
    enable.add_argument("id", type=int)
    register = hooks_sub.add_parser("register", help="create our webhook for this URL")
    register.add_argument("url")
    for command in (enable, register):
        command.add_argument("--tenant", default=argparse.SUPPRESS, help="the tenant (slug)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in {role.command for role in ROLES}:
        from orderbot.runtime.bootstrap import main as run_role

        return run_role(args.command)
    if args.command == "settings":  # documentation: no environment needed
        return _settings_docs(markdown=args.markdown, into=args.into)
    from orderbot.config.settings import ConfigError, load_settings
    from orderbot.runtime.logging import configure_logging

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"orderbot: {exc}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        return _migrate(settings)
    if args.command == "run":
        return _run_all(settings.log_format, chat_url(settings), console_url(settings))
    configure_logging(settings, "cli")  # log lines go to stderr; stdout is the report
    if args.command == "tenants":
        from orderbot.cli.tenants import run_tenants

        return asyncio.run(run_tenants(settings, args))
    if args.command in ("reconcile", "chat2desk"):
        from orderbot.cli.recovery import run_recovery

        return asyncio.run(run_recovery(settings, args))
    if args.command == "messages":
        return asyncio.run(_repartition(settings))
    if args.command == "history":
        from orderbot.cli.history import run_history

        return asyncio.run(run_history(settings, args))
    return asyncio.run(_dlq(settings, args))


def _settings_docs(*, markdown: bool, into: Path | None) -> int:
    from orderbot.cli import settings_docs

    try:
        text = settings_docs.markdown_table() if markdown else settings_docs.env_example()
    except ValueError as exc:  # a field the documents cannot show
        print(f"orderbot settings: {exc}", file=sys.stderr)
        return 1
    if into is None:
        sys.stdout.write(text)
        return 0
    try:
        if markdown:
            text = settings_docs.between_markers(into.read_text(encoding="utf-8"), text)
        into.write_text(text, encoding="utf-8")
    except (OSError, ValueError) as exc:
        print(f"orderbot settings: {into}: {exc}", file=sys.stderr)
        return 1
    return 0


def _migrate(settings: Settings) -> int:
    """The schema, then the Redis keys' layout (orderbot/conversation/key_layout.py)."""
    from redis.exceptions import RedisError

    from orderbot.orders.migrate import SchemaMissing, migrate, schema_sql
    from orderbot.runtime.logging import configure_logging

    configure_logging(settings, "migrate")
    try:
        schema_sql()  # a broken install is said as such, before any database is touched
        asyncio.run(migrate(settings.database_url))
    except SchemaMissing as exc:
        print(f"orderbot migrate: broken installation: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"orderbot migrate: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    try:
        asyncio.run(_retag_redis_keys(settings))
    except (OSError, RedisError) as exc:
        print(f"orderbot migrate: cannot migrate the Redis keys: {exc}", file=sys.stderr)
        return 1
    return 0


def chat_url(settings: Settings) -> str | None:
    """Where a newcomer sees the bot answer: the web chat's page, if it is on."""
    if settings.webchat_secret is None or not settings.webchat_secret.get_secret_value():
        return None
    return _served_url(settings, "/chat")


def console_url(settings: Settings) -> str | None:
    """Where the operators watch the orders arrive: the console, if it is on."""
    key = settings.operator_api_key
    if not settings.console_session_secrets() or key is None or not key.get_secret_value():
        return None
    return _served_url(settings, "/console/")


def _served_url(settings: Settings, path: str) -> str:
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/") + path
    host = settings.http_host
    if host in ("0.0.0.0", "::", ""):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.http_port}{path}"


async def _retag_redis_keys(settings: Settings) -> None:
    from orderbot.conversation.key_layout import retag_keys
    from orderbot.runtime.resources import open_redis

    async with open_redis(settings) as redis:
        await retag_keys(redis, settings.redis_key_prefix)


def _run_all(log_format: str, chat: str | None = None, console: str | None = None) -> int:
    """Start the three processes; Ctrl-C (or SIGTERM) stops them all gracefully.

    The children get their own process group, so a terminal's Ctrl-C reaches only
    this process, which passes it on exactly once as SIGINT: a second signal would
    tell them to skip the drain.
    """
    children: dict[str, subprocess.Popen[bytes]] = {}
    signalled: set[str] = set()
    relay = _LineRelay(prefixed=log_format == "console")

    def stop_all(_signum: int = signal.SIGINT, _frame: object = None) -> None:
        for role, child in children.items():
            if role not in signalled and child.poll() is None:
                signalled.add(role)
                child.send_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    if chat is not None:
        print(f"orderbot run: the web chat is at {chat}", flush=True)
    if console is not None:
        print(f"orderbot run: the operator console is at {console}", flush=True)
    for described in ROLES:
        child = subprocess.Popen(
            [sys.executable, "-m", described.name],
            process_group=0,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        children[described.name] = child
        relay.follow(described.name, child)
    # The first child to exit, for whatever reason, stops the group. os.wait reaps
    # it, so its status is kept here: Popen would report 0 for a reaped child.
    reaped: dict[int, int] = {}
    with contextlib.suppress(ChildProcessError):
        pid, wait_status = os.wait()
        reaped[pid] = os.waitstatus_to_exitcode(wait_status)
    stop_all()
    status = 0
    for role, child in children.items():
        code = reaped[child.pid] if child.pid in reaped else child.wait()
        # A child interrupted before its own code ran dies by the signal; it had
        # nothing in flight, so that is a clean stop too.
        if code != 0 and not (role in signalled and code == -signal.SIGINT):
            print(f"orderbot run: {role} exited with {code}", file=sys.stderr)
            status = 1
    relay.join()
    return status


class _LineRelay:
    """The children's output, passed on a whole line at a time: three processes writing
    to one terminal or log file would otherwise cut into each other's JSON lines. In
    console mode each line says which role wrote it."""

    def __init__(self, *, prefixed: bool) -> None:
        self._prefixed = prefixed
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def follow(self, role: str, child: subprocess.Popen[bytes]) -> None:
        for source, sink in ((child.stdout, sys.stdout), (child.stderr, sys.stderr)):
            if source is None:
                continue
            thread = threading.Thread(
                target=self._copy, args=(role, source, sink), name=f"relay-{role}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _copy(self, role: str, source: IO[bytes], sink: TextIO) -> None:
        prefix = f"[{role}] ".encode() if self._prefixed else b""
        for line in iter(source.readline, b""):
            whole = line if line.endswith(b"\n") else line + b"\n"
            with self._lock:
                sink.buffer.write(prefix + whole)
                sink.buffer.flush()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=5)


async def _repartition(settings: Settings) -> int:
    from orderbot.amqp.link import BrokerLink
    from orderbot.cli.repartition import repartition

    async with BrokerLink(settings, "cli") as broker:
        try:
            async with asyncio.timeout(settings.publish_timeout.total_seconds() * 2):
                await broker.wait_connected()
        except TimeoutError:
            print("orderbot messages: cannot reach the broker at AMQP_URL", file=sys.stderr)
            return 1
        moved = await repartition(broker)
    for name, count in moved.items():
        print(f"{name}: moved {count} message(s)")
    print(f"moved {sum(moved.values())} message(s) in all")
    return 0


async def _dlq(settings: Settings, args: argparse.Namespace) -> int:
    from orderbot.amqp import dlq
    from orderbot.amqp.link import BrokerLink

    if args.dlq_command == "purge" and not args.yes:
        print("orderbot dlq purge: add --yes to delete every parked message", file=sys.stderr)
        return 2
    async with BrokerLink(settings, "cli") as broker:
        try:
            async with asyncio.timeout(settings.publish_timeout.total_seconds() * 2):
                await broker.wait_connected()
        except TimeoutError:
            print("orderbot dlq: cannot reach the broker at AMQP_URL", file=sys.stderr)
            return 1
        if args.dlq_command == "list":
            parked = await dlq.list_parked(broker, limit=args.limit, held=args.held)
            _print_parked(parked, as_json=args.json)
        elif args.dlq_command == "replay":
            count = await dlq.replay(
                broker, message_id=None if args.all else args.message_id, held=args.held
            )
            print(f"replayed {count} message(s)")
            if args.message_id and count == 0:
                return 1
        else:
            print(f"purged {await dlq.purge(broker, held=args.held)} message(s)")
    return 0


def _print_parked(parked: Sequence[object], *, as_json: bool) -> None:
    from orderbot.amqp.dlq import ParkedMessage

    rows = [p for p in parked if isinstance(p, ParkedMessage)]
    if as_json:
        for row in rows:
            print(json.dumps(row.as_dict(), ensure_ascii=False))
        return
    if not rows:
        print("the DLQ is empty")
        return
    header = ("AGE", "TENANT", "CLIENT", "ATTEMPTS", "REASON", "LAST ERROR", "ID")
    table = [
        (
            _age(row.age_seconds),
            row.tenant or "-",
            row.client or "-",
            str(row.attempts),
            row.reason[:60],
            (row.last_error or "-")[:60],
            row.message_id,
        )
        for row in rows
    ]
    widths = [max(len(r[i]) for r in (header, *table)) for i in range(len(header))]
    for line in (header, *table):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    print(f"{len(rows)} parked message(s)")


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


if __name__ == "__main__":
    sys.exit(main())
