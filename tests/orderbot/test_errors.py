"""Which failures are waited out (a dependency is down) and which are not (a bug, a
refusal): the line between a slow system and a DLQ full of healthy messages."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import redis.exceptions
from aiohttp import web

from orderbot.config.settings import Settings
from orderbot.delivery.chat2desk import Chat2DeskSender
from orderbot.envelopes import Conversation
from orderbot.errors import (
    BrokerUnavailable,
    PermanentSendError,
    Stopping,
    TransientSendError,
    is_transient,
)
from orderbot.runtime.resources import open_http
from orderbot.runtime.waiting import until_done

TRANSIENT = [
    redis.exceptions.ConnectionError("reset"),
    redis.exceptions.TimeoutError(),
    redis.exceptions.ReadOnlyError("READONLY You can't write against a read only replica."),
    redis.exceptions.ResponseError("MISCONF Redis is configured to save RDB snapshots"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.SerializationError("could not serialize access"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle"),
    # a terminated backend's FATAL read while its connection was idle (protocol/coreproto.pyx)
    asyncpg.InternalClientError("cannot switch to state 11; another operation (2) is in progress"),
    asyncpg.InternalClientError("cannot process message 'E': protocol is in an unexpected state"),
    BrokerUnavailable("not confirmed"),
    ConnectionRefusedError(),
    # uvloop (handles/handle.pyx) on a write to a connection the peer closed
    RuntimeError(
        "unable to perform operation on <TCPTransport closed=True reading=False 0x7f>; "
        "the handler is closed"
    ),
]
PERMANENT = [
    redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"),
    asyncpg.exceptions._base.DataError("invalid input for query argument $1"),
    asyncpg.exceptions.UniqueViolationError("duplicate key"),
    asyncpg.InternalClientError("no binary format encoder for type ltree (OID 16385)"),
    # two tasks on one connection
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    ValueError("a bug"),
    KeyError("a bug"),
    RuntimeError("a bug"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_dependency_outages_are_waited_out(exc: Exception) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", PERMANENT, ids=lambda e: type(e).__name__)
def test_bugs_and_refusals_are_not_retried_in_place(exc: Exception) -> None:
    assert not is_transient(exc)


async def _send_once(body: bytes, status: int, token: str) -> Exception | None:
    async def answer(_: web.Request) -> web.Response:
        return web.Response(body=body, status=status, content_type="text/html", charset="latin-1")

    app = web.Application()
    app.router.add_post("/v1/messages", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        settings = Settings(_env_file=None)
        async with open_http(settings) as session:
            sender = Chat2DeskSender(session, f"http://127.0.0.1:{port}", token)
            try:
                await sender.send(
                    Conversation(tenant="t", provider="chat2desk", client_id="1"), "hi"
                )
            except Exception as exc:
                return exc
            return None
    finally:
        await runner.cleanup()


async def test_a_5xx_with_an_undecodable_body_is_transient() -> None:
    error = await _send_once(b"<h1>Bad gateway \xff\xfe</h1>", 502, "token-1234")
    assert isinstance(error, TransientSendError)
    assert error.status == 502


async def test_token_echoed_at_the_truncation_edge_is_still_redacted() -> None:
    token = "secret-api-token-0042"
    body = ("x" * 290 + token).encode()
    error = await _send_once(body, 401, token)
    assert isinstance(error, PermanentSendError)
    assert "secret-api" not in error.reason


async def test_an_outage_is_waited_out_until_the_dependency_answers() -> None:
    failures = [redis.exceptions.ConnectionError("down")] * 3

    async def operation() -> str:
        if failures:
            raise failures.pop()
        return "done"

    # Passed as the worker passes its step: a lambda returning a coroutine.
    assert await until_done(lambda: operation(), asyncio.Event()) == "done"


async def test_a_stop_during_an_outage_ends_the_wait() -> None:
    stop = asyncio.Event()

    async def operation() -> str:
        stop.set()  # SIGTERM arrives while the dependency is still down
        raise redis.exceptions.ConnectionError("down")

    with pytest.raises(Stopping):
        await until_done(operation, stop)


async def test_a_bug_is_raised_at_once_not_waited_out() -> None:
    tries = 0

    async def operation() -> str:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise redis.exceptions.ConnectionError("down")
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await until_done(operation, asyncio.Event())
    assert tries == 2
