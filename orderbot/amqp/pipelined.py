"""Confirmed publishes written together: every publish of one event-loop turn leaves in
one write, and each waits only for its own confirm.

aiormq's `basic_publish` takes the channel's lock, queues each publish for its
writer task, and waits for its own drain before it waits for the confirm: per
publish two futures, a lock, a queue hand-off and a `send()` of its own. Under
webhook load the requests of one turn (the server reads several connections per
turn) publish together, so here they share one queue item and one `send()`. The
broker still confirms each one, and a 2xx still waits for its own confirm.

Delivery tags are numbered when the batch is handed to aiormq's write queue, in the
order of the bytes, and only if the hand-off succeeds: a tag the broker never saw
would shift every later confirm onto the wrong publish. So every publish on a channel
used here must go through here (`BrokerLink` does); RPCs on it take no tag.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiormq
from aiormq.abc import ChannelFrame, ConfirmationFrameType


@dataclass(slots=True)
class _Batch:
    channel: aiormq.Channel
    payloads: list[bytes] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    confirms: list[asyncio.Future[ConfirmationFrameType]] = field(default_factory=list)


class PipelinedPublisher:
    """Hands the publishes of each loop turn to aiormq as one frame, with a deadline
    for their confirms taken once per batch instead of once per publish."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._batch: _Batch | None = None

    def publish(
        self, channel: aiormq.Channel, frames: bytes, message_id: str
    ) -> asyncio.Future[ConfirmationFrameType]:
        """The future of this publish's confirm: the broker's Basic.Ack, or an
        exception (a nack, a return, the channel closed, TimeoutError after the
        timeout). `frames` are the publish's bytes for this channel's number."""
        batch = self._batch
        if batch is None or batch.channel is not channel:
            if batch is not None:
                self._flush()
            batch = self._batch = _Batch(channel)
            asyncio.get_running_loop().call_soon(self._flush_turn, batch)
        # A future of the channel's own store, so closing the channel fails it.
        confirm: asyncio.Future[ConfirmationFrameType] = channel.create_future()
        batch.payloads.append(frames)
        batch.message_ids.append(message_id)
        batch.confirms.append(confirm)
        return confirm

    def _flush_turn(self, batch: _Batch) -> None:
        if self._batch is batch:
            self._flush()

    def _flush(self) -> None:
        batch, self._batch = self._batch, None
        if batch is None:
            return
        channel = batch.channel
        item = ChannelFrame(payload=b"".join(batch.payloads), should_close=False)
        try:
            if channel.is_closed:
                raise ConnectionError("AMQP channel closed")
            channel.write_queue.put_nowait(item)
        except (ConnectionError, asyncio.QueueFull) as exc:
            failure = (
                exc
                if isinstance(exc, ConnectionError)
                else ConnectionError("AMQP write queue full")
            )
            for confirm in batch.confirms:
                if not confirm.done():
                    confirm.set_exception(failure)
            return
        deadline = _Deadline(len(batch.confirms))
        deadline.timer = asyncio.get_running_loop().call_later(
            self._timeout, _expire, batch.confirms
        )
        confirmations = channel.confirmations
        returns = channel.message_id_delivery_tag
        for message_id, confirm in zip(batch.message_ids, batch.confirms, strict=True):
            channel.delivery_tag += 1
            tag = channel.delivery_tag
            confirmations[tag] = confirm
            # How aiormq finds the publish a Basic.Return (mandatory, unroutable) is for.
            returns[message_id] = tag
            confirm.add_done_callback(_Settled(returns, message_id, tag, deadline))


@dataclass(slots=True)
class _Deadline:
    """The batch's one timer, cancelled once all of it is settled, so that settled
    futures are not kept for the whole timeout."""

    pending: int
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True, frozen=True)
class _Settled:
    """A publish settled: drop its return lookup (unless a later publish of the same
    message id has taken it over) and count it off its batch's deadline."""

    returns: dict[str, int]
    message_id: str
    tag: int
    deadline: _Deadline

    def __call__(self, _: object) -> None:
        if self.returns.get(self.message_id) == self.tag:
            del self.returns[self.message_id]
        deadline = self.deadline
        deadline.pending -= 1
        if deadline.pending == 0 and deadline.timer is not None:
            deadline.timer.cancel()


def _expire(confirms: list[asyncio.Future[ConfirmationFrameType]]) -> None:
    for confirm in confirms:
        if not confirm.done():
            confirm.set_exception(TimeoutError("publish not confirmed in time"))
