"""`orderbot history purge`: delete conversation history older than HISTORY_RETENTION (or
`--older-than`) now, instead of waiting for the outbox worker's hourly purge."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

import asyncpg

from orderbot.config.settings import Settings, parse_duration
from orderbot.history import store


async def run_history(settings: Settings, args: argparse.Namespace) -> int:
    try:
        older_than: timedelta = (
            parse_duration(args.older_than) if args.older_than else settings.history_retention
        )
    except ValueError as exc:
        print(f"orderbot history purge: --older-than: {exc}", file=sys.stderr)
        return 2
    try:
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"orderbot history: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    try:
        messages, conversations = await store.purge(pool, older_than)
    finally:
        await pool.close()
    print(f"purged {messages} messages and {conversations} conversations older than {older_than}")
    return 0
