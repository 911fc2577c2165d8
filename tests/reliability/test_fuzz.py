"""Property-based fuzzing of every HTTP endpoint of the real server process (guarantee 8).

For any request: never a 5xx, an error is a JSON body with a reason and never echoes
the webhook token, the server process stays alive, and what was queued is exactly what
the server answered "queued" to, every one of which was a valid client message. The
queued messages then go through a worker: each is applied, nothing reaches the DLQ.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
from dataclasses import dataclass, field

import pytest
from aio_pika.abc import AbstractChannel
from hypothesis import HealthCheck, given, settings
from redis.asyncio import Redis

from orderbot.config.settings import Settings
from tests.support.broker_tools import depth, messages_queues
from tests.support.credentials import TWILIO_TOKEN, WEBHOOK_TOKEN
from tests.support.reliability.books import record_lines
from tests.support.reliability.chaos_provider import ChaosChat2Desk
from tests.support.reliability.fuzz_endpoints import (
    ENDPOINTS,
    TWILIO_PATH,
    Endpoint,
    Probe,
    server_view,
)
from tests.support.reliability.knobs import is_soak
from tests.support.reliability.load import AppliedWatcher
from tests.support.reliability.system import System

pytestmark = pytest.mark.reliability

EXAMPLES = int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", 2000 if is_soak() else 300))


@dataclass
class FuzzLedger:
    probes: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    # (provider, message id) of the messages answered "queued"
    queued: set[tuple[str, str]] = field(default_factory=set)
    queued_answers: int = 0
    violations: list[str] = field(default_factory=list)

    def check(self, probe: Probe, status: int, body: bytes) -> None:
        self.probes += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        problems = []
        answer: object = None
        twiml = probe.path == TWILIO_PATH and status == 200
        try:
            answer = json.loads(body) if body and not twiml else None
        except ValueError:
            if status >= 400 or probe.path.startswith("/webhook/"):  # /metrics is text
                problems.append("the answer is not JSON")
        if twiml:
            # Twilio is answered TwiML; every valid message is queued, a repeat too (the
            # worker's processed-marker makes it a no-op).
            if not body.startswith(b"<?xml"):
                problems.append("a 200 to Twilio that is not TwiML")
            answer = {"status": "queued"}
        if status >= 500:
            problems.append(f"{status}")
        if status >= 400 and not (isinstance(answer, dict) and answer.get("error")):
            problems.append("an error without a JSON reason")
        if WEBHOOK_TOKEN.encode() in body or TWILIO_TOKEN.encode() in body:
            problems.append("the answer echoes a secret token")
        outcome = answer.get("status") if isinstance(answer, dict) else None
        if outcome == "queued":
            self.queued_answers += 1
            if probe.provider == "twilio":
                sid = dict(server_view(probe.body) or []).get("MessageSid", "")
                self.queued.add(("twilio", sid))
            elif probe.message_id is not None:
                self.queued.add((probe.provider, probe.message_id))
        if probe.expect == "queued" and not (status == 200 and outcome == "queued"):
            problems.append(f"a valid client message answered {status} {outcome}")
        if probe.expect == "ignored" and not (status == 200 and outcome == "ignored"):
            problems.append(f"an event that is no client message answered {status} {outcome}")
        if probe.expect == "refused" and not 400 <= status < 500:
            problems.append(f"an invalid request answered {status} {outcome}")
        if outcome == "queued" and probe.expect not in ("queued", "any"):
            problems.append("queued a message from an invalid request")
        if problems:
            self.violations.append(f"{', '.join(problems)}: {probe.describe()} -> {body[:200]!r}")


def _send(port: int, probe: Probe) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(probe.method, probe.path, skip_accept_encoding=True)
        if probe.content_type is not None:
            connection.putheader("Content-Type", probe.content_type)
        for name, value in probe.headers:
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(probe.body)))
        connection.endheaders(probe.body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _fuzz(endpoint: Endpoint, port: int, ledger: FuzzLedger) -> None:
    """Runs in a thread: hypothesis drives its own loop of blocking requests."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=not is_soak(),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(endpoint.probes)
    def probe_once(probe: Probe) -> None:
        status, body = _send(port, probe)
        ledger.check(probe, status, body)

    probe_once()


async def test_no_request_to_any_endpoint_gets_a_5xx_or_queues_an_invalid_message(
    system: System,
    provider: ChaosChat2Desk,
    redis: Redis,
    amqp: AbstractChannel,
    settings: Settings,
) -> None:
    server = await system.start_role("server")
    ledger = FuzzLedger()
    for endpoint in ENDPOINTS:
        await asyncio.to_thread(_fuzz, endpoint, system.http_port, ledger)
    alive = server.process is not None and server.process.returncode is None
    queued = await depth(amqp, messages_queues(settings))

    await system.start_role("worker")
    await system.start_role("outbox_worker")
    watchers = {
        provider: AppliedWatcher(redis, settings.redis_key_prefix, settings.tenant, provider)
        for provider in ("chat2desk", "twilio")
    }
    applied = await asyncio.gather(
        *(watchers[p].wait(m, timeout=60) for p, m in sorted(ledger.queued))
    )
    for watcher in watchers.values():
        await watcher.close()
    exits = await system.stop_all()
    parked = await depth(amqp, settings.queue("dlq"))
    left = await depth(amqp, messages_queues(settings))
    record_lines(
        "fuzz",
        [
            f"fuzz: {ledger.probes} requests over {len(ENDPOINTS)} endpoints, answers "
            + ", ".join(f"{k}: {v}" for k, v in sorted(ledger.statuses.items())),
            f"  queued {queued} (answered queued: {ledger.queued_answers}, of them Twilio "
            f"{len([m for m in ledger.queued if m[0] == 'twilio'])}), applied "
            f"{sum(applied)}, parked {parked}, violations {len(ledger.violations)}",
        ],
    )

    assert ledger.violations == [], "\n".join(ledger.violations)
    assert alive, "the server died under the fuzzer"
    assert queued == ledger.queued_answers
    assert all(applied), "a queued message was never applied"
    assert (parked, left) == (0, 0)
    assert [e.status for e in exits] == [0, 0, 0]
