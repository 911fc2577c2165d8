"""Acks sent together: one `multiple` ack where every earlier delivery was handled, and
never an ack over a message left unacknowledged (a partition handed over, a stop).

The channel here is a model of RabbitMQ's: an ack must name an unacknowledged tag (or
the broker closes the channel), and a `multiple` one settles every unacknowledged tag
up to it, which is how a message left for the next consumer would be lost.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field

import aiormq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderbot.amqp import consumer
from orderbot.amqp.consumer import _Acks
from orderbot.amqp.dead_letters import Reason, park
from orderbot.amqp.testing import InMemoryBroker
from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings
from tests.support.broker_tools import unconnected_consumer

WRITE_TURNS = 3  # loop turns an ack takes to reach the broker


@dataclass
class _Broker:
    """One channel's unacknowledged deliveries, as the broker keeps them."""

    unacked: set[int] = field(default_factory=set)
    frames: list[tuple[int, bool]] = field(default_factory=list)
    moments: list[float] = field(default_factory=list)  # the loop's time of each frame
    sent: asyncio.Event = field(default_factory=asyncio.Event)  # a frame has arrived

    def deliver(self, tag: int) -> _Message:
        self.unacked.add(tag)
        return _Message(tag, self)

    def ack(self, tag: int, multiple: bool) -> None:
        assert tag in self.unacked, f"ack of tag {tag}, not unacknowledged: channel closed"
        self.frames.append((tag, multiple))
        self.moments.append(asyncio.get_running_loop().time())
        self.sent.set()
        if multiple:
            self.unacked -= {t for t in self.unacked if t <= tag}
        else:
            self.unacked.discard(tag)


@dataclass
class _Channel:
    is_closed: bool = False


@dataclass
class _Message:
    delivery_tag: int
    broker: _Broker
    channel: _Channel = field(default_factory=_Channel)
    message_id: str | None = None
    processed: bool = False

    async def ack(self, multiple: bool = False) -> None:
        for _ in range(WRITE_TURNS):  # a write: other tasks run meanwhile
            await asyncio.sleep(0)
        self.broker.ack(self.delivery_tag, multiple)
        self.processed = True

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        await asyncio.sleep(0)
        self.broker.unacked.discard(self.delivery_tag)


async def test_messages_handled_out_of_order_are_acknowledged_in_one_frame() -> None:
    broker = _Broker()
    acks = _Acks(None, prefetch=10)
    messages = [broker.deliver(tag) for tag in range(1, 5)]
    for i in (1, 0, 3, 2):
        acks.handled(messages[i])  # type: ignore[arg-type]
    await acks.flush()
    assert broker.frames == [(4, True)]
    assert broker.unacked == set()


async def test_no_ack_covers_a_message_left_unacknowledged() -> None:
    broker = _Broker()
    acks = _Acks(None, prefetch=10)
    messages = [broker.deliver(tag) for tag in range(1, 6)]
    for i in (0, 1, 3, 4):  # tag 3 is left for the next consumer
        acks.handled(messages[i])  # type: ignore[arg-type]
    await acks.flush()
    assert broker.unacked == {3}
    assert broker.frames == [(2, True), (4, False), (5, False)]


async def test_a_nacked_message_lets_the_multiple_ack_pass_it() -> None:
    broker = _Broker()
    acks = _Acks(None, prefetch=10)
    messages = [broker.deliver(tag) for tag in range(1, 4)]
    await messages[0].nack(requeue=True)
    acks.settled(messages[0])  # type: ignore[arg-type]
    acks.handled(messages[1])  # type: ignore[arg-type]
    acks.handled(messages[2])  # type: ignore[arg-type]
    await acks.flush()
    assert broker.frames == [(3, True)]


async def test_half_the_prefetch_waiting_is_sent_without_waiting_for_the_window() -> None:
    broker = _Broker()
    acks = _Acks(None, prefetch=4)
    acks.handled(broker.deliver(1))  # type: ignore[arg-type]
    acks.handled(broker.deliver(2))  # type: ignore[arg-type]
    async with asyncio.timeout(consumer.ACK_WINDOW / 2):
        await broker.sent.wait()
    assert broker.frames == [(2, True)]


async def test_an_ack_waits_at_most_the_window() -> None:
    broker = _Broker()
    acks = _Acks(None, prefetch=10)
    acks.handled(broker.deliver(1))  # type: ignore[arg-type]
    async with asyncio.timeout(consumer.ACK_WINDOW * 10):
        await broker.sent.wait()
    assert broker.frames == [(1, False)]


async def test_a_message_its_handler_parked_is_acknowledged_without_waiting_for_the_window(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parked message leaves no marker: redelivered after a connection lost while its
    ack waited, it would be parked a second time."""
    monkeypatch.setattr(consumer, "ACK_WINDOW", 3600.0)  # only an ack at once arrives
    broker = _Broker()
    dead_letters = InMemoryBroker(Topology.from_settings(settings))
    channel = _Channel()

    async def parks(message: object) -> None:
        await park(
            dead_letters,
            b"{}",
            message_id="m",
            reason=Reason.PERMANENT,
            detail="refused",
            source_queue="q",
        )

    consuming = unconnected_consumer(parks, shutdown_timeout=1)
    consuming._acks = _Acks(channel, prefetch=10)
    message = broker.deliver(1)
    message.channel = channel

    await consuming._on_message(message)  # type: ignore[arg-type]
    async with asyncio.timeout(10):
        await broker.sent.wait()

    assert broker.frames == [(1, False)]
    assert len(dead_letters.on(dead_letters.topology.dlq)) == 1


async def test_a_message_its_handler_acknowledged_is_not_acknowledged_again() -> None:
    broker = _Broker()
    acks = _Acks(None, prefetch=10)
    first, second = broker.deliver(1), broker.deliver(2)
    acks.handled(first)  # type: ignore[arg-type]
    await second.ack()
    acks.handled(second)  # type: ignore[arg-type]
    await acks.flush()
    assert broker.frames == [(2, False), (1, False)]
    assert broker.unacked == set()


async def test_the_acks_of_every_channel_go_at_the_same_moment() -> None:
    """Two channels' acks, handled half a window apart, are sent on one tick of the
    process's ack clock, so the broker takes them in one burst."""
    broker = _Broker()
    first, second = _Acks(None, prefetch=10), _Acks(None, prefetch=10)
    first.handled(broker.deliver(1))  # type: ignore[arg-type]
    await asyncio.sleep(consumer.ACK_WINDOW / 2)  # the scenario: the second comes later
    second.handled(broker.deliver(2))  # type: ignore[arg-type]
    async with asyncio.timeout(consumer.ACK_WINDOW * 10):
        while len(broker.moments) < 2:
            await asyncio.sleep(0)
    assert broker.moments[1] - broker.moments[0] < consumer.ACK_WINDOW / 4


async def test_nothing_is_acknowledged_on_a_closed_channel() -> None:
    broker = _Broker()
    acks = _Acks(None, prefetch=10)
    message = broker.deliver(1)
    message.channel.is_closed = True
    acks.handled(message)  # type: ignore[arg-type]
    await acks.flush()
    assert broker.frames == []


async def test_after_an_ack_that_failed_the_rest_are_not_tried() -> None:
    broker = _Broker()
    acks = _Acks(None, prefetch=10)
    messages = [broker.deliver(tag) for tag in range(1, 6)]
    tried: list[int] = []

    async def dead_connection(multiple: bool = False, *, tag: int) -> None:
        tried.append(tag)
        raise ConnectionError("connection reset")

    for message in messages[1:]:  # tag 1 is left for the next consumer: acks go one by one
        message.ack = functools.partial(dead_connection, tag=message.delivery_tag)  # type: ignore[method-assign]
        acks.handled(message)  # type: ignore[arg-type]
    await acks.flush()

    assert tried == [2]


async def test_a_delivery_of_a_closed_channel_still_reaches_its_handler() -> None:
    handled: list[object] = []

    async def handler(message: object) -> None:
        handled.append(message)

    class _Gone:
        message_id = "m"

        @property
        def channel(self) -> object:
            raise aiormq.exceptions.ChannelInvalidStateError("closed")

    consuming = unconnected_consumer(handler, shutdown_timeout=1)
    consuming._acks = _Acks(_Channel(), prefetch=10)
    gone = _Gone()

    await consuming._on_message(gone)  # type: ignore[arg-type]
    await asyncio.gather(*consuming._inflight)

    assert handled == [gone]


async def test_a_multiple_ack_waits_for_the_single_acks_being_written() -> None:
    """Acks 3 and 4 go one by one (1 and 2 still running); 1, 2 and 5 are then handled
    while they are being written: the multiple ack on 5 must not reach the broker before
    the single ack on 4, which it would settle first, making that one unknown."""
    broker = _Broker()
    acks = _Acks(None, prefetch=2)  # every handled message is sent at once
    messages = [broker.deliver(tag) for tag in range(1, 6)]
    acks.handled(messages[2])  # type: ignore[arg-type]
    acks.handled(messages[3])  # type: ignore[arg-type]
    while acks._waiting:  # until the send of 3 and 4 has taken them
        await asyncio.sleep(0)
    assert broker.frames == []  # and is writing the first
    for i in (0, 1, 4):
        acks.handled(messages[i])  # type: ignore[arg-type]
    await acks.flush()
    assert broker.unacked == set()
    assert broker.frames[:2] == [(3, False), (4, False)]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["handled", "left", "nacked"]), min_size=1, max_size=30),
    st.randoms(use_true_random=False),
    st.lists(st.integers(min_value=0, max_value=3), max_size=60),
    st.integers(min_value=1, max_value=12),
)
def test_any_order_of_outcomes_acks_exactly_the_handled_ones(
    outcomes: list[str], random: object, pauses: list[int], prefetch: int
) -> None:
    """Whatever order the handlers finish in and whenever the acks go out: every handled
    message is acknowledged once, none left is, and the broker never sees an unknown tag."""

    async def scenario() -> None:
        broker = _Broker()
        acks = _Acks(None, prefetch=prefetch)
        messages = [broker.deliver(tag) for tag in range(1, len(outcomes) + 1)]
        order = list(range(len(outcomes)))
        random.shuffle(order)  # type: ignore[attr-defined]
        turns = iter(pauses)
        for i in order:
            outcome, message = outcomes[i], messages[i]
            if outcome == "handled":
                acks.handled(message)  # type: ignore[arg-type]
            elif outcome == "nacked":
                await message.nack(requeue=True)
                acks.settled(message)  # type: ignore[arg-type]
            for _ in range(next(turns, 0)):
                await asyncio.sleep(0)  # let sends started meanwhile interleave
        await acks.flush()
        left = {i + 1 for i, o in enumerate(outcomes) if o == "left"}
        assert broker.unacked == left
        acked = [tag for tag, _ in broker.frames]
        assert len(acked) == len(set(acked))

    asyncio.run(scenario())
