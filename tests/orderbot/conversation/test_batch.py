"""The Redis batch: the commands of concurrent callers in one pipeline, each caller with
its own reply or error, a script Redis does not know loaded and run again, and a Redis
that answers nothing failing the batch within the client's socket timeout."""

from __future__ import annotations

import asyncio
import enum
import time
import uuid
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from structlog.testing import capture_logs

from orderbot.conversation.batch import RedisBatch
from tests.support.services import Services
from tests.support.tcp_proxy import running_proxy


async def test_an_error_reply_goes_to_its_caller_alone(redis: Redis, namespace: str) -> None:
    batch = RedisBatch(redis)
    fails = batch.script("return redis.error_reply('ERR this one fails')")
    key = f"{namespace}:batch:ok"
    first = batch.call(("SET", key, "1"))
    failed = fails(keys=[])
    last = batch.call(("GET", key))
    assert await first == "OK" or await first is True
    with pytest.raises(ResponseError, match="this one fails"):
        await failed
    assert await last == "1"


async def test_a_script_redis_does_not_know_is_loaded_and_run(redis: Redis) -> None:
    batch = RedisBatch(redis)
    fresh = batch.script(f"return '{uuid.uuid4().hex}'")  # never loaded before
    answers = await asyncio.gather(fresh(keys=[]), batch.call(("PING",)))
    assert answers[0] == fresh.source.split("'")[1]
    assert answers[1] in (True, "PONG")


async def test_a_redis_that_answers_nothing_fails_the_batch_within_the_socket_timeout(
    services: Services,
) -> None:
    async with running_proxy(urlsplit(services.redis_url).port or 6379) as proxy:
        proxy.outage("blackhole")
        client = Redis(host="127.0.0.1", port=proxy.port, socket_timeout=0.3)
        batch = RedisBatch(client)
        calls = [batch.call(("PING",)), batch.call(("PING",))]
        started = time.monotonic()
        results = await asyncio.gather(*calls, return_exceptions=True)
        elapsed = time.monotonic() - started
        await client.aclose()
    assert all(isinstance(r, RedisTimeoutError) for r in results), results
    assert elapsed < 3.0  # the 0.3 s bound, with room for a loaded machine


async def test_an_argument_redis_cannot_take_is_refused_to_its_caller_alone(
    redis: Redis, namespace: str
) -> None:
    batch = RedisBatch(redis)
    key = f"{namespace}:batch:kind"
    for wrong in (True, None, [1]):
        with pytest.raises(TypeError):
            batch.call(("SET", key, wrong))  # type: ignore[arg-type]
    assert await batch.call(("SET", key, _Kind.ORDER)) in (True, "OK")
    assert await batch.call(("GET", key)) == "order"


async def test_a_text_that_is_not_unicode_fails_its_caller_alone(
    redis: Redis, namespace: str
) -> None:
    batch = RedisBatch(redis)
    key = f"{namespace}:batch:surrogate"
    with pytest.raises(UnicodeEncodeError):
        batch.call(("SET", key, "half a pair: \ud800"))
    other = batch.call(("SET", key, "whole"))  # the same loop turn, the same batch
    assert await other in (True, "OK")
    assert await batch.call(("GET", key)) == "whole"


async def test_a_best_effort_command_redis_cannot_take_is_logged_not_raised(
    redis: Redis, namespace: str
) -> None:
    batch = RedisBatch(redis)
    with capture_logs() as logs:
        batch.fire(("SET", f"{namespace}:batch:fired", "\ud800"), what="remember_failed")
    assert [entry["event"] for entry in logs] == ["remember_failed"]


class _Kind(enum.StrEnum):
    ORDER = "order"


async def test_every_kind_of_argument_reaches_redis_as_the_client_sends_it(
    redis: Redis, namespace: str, services: Services
) -> None:
    batch = RedisBatch(redis)
    values: list[str | bytes | int | float] = [
        "Привет, ул. Киевская 95",
        b"\x00\xffraw",
        -5,
        2**70,
        0.016666666666666666,
        1e20,
        3.0,
        "",
        _Kind.ORDER,
    ]
    for i, value in enumerate(values):
        await batch.call(("SET", f"{namespace}:batch:ours:{i}", value))
        await redis.set(f"{namespace}:batch:client:{i}", value)
    raw = Redis.from_url(services.redis_url)  # bytes as stored
    try:
        for i in range(len(values)):
            ours = await raw.get(f"{namespace}:batch:ours:{i}")
            assert ours == await raw.get(f"{namespace}:batch:client:{i}"), values[i]
    finally:
        await raw.aclose()
