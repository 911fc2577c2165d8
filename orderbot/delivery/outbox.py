"""Handing a reply to the outbox, in the customer's order.

Worker replies that could not be sent and the operator's status notifications both
go this way, so both keep a customer's replies in sequence behind those waiting.
"""

from __future__ import annotations

from orderbot.amqp.dead_letters import RetryStory
from orderbot.amqp.publisher import Publisher
from orderbot.conversation.reply_order import ReplyOrder
from orderbot.envelopes import OutboundReply, encode


async def hand_to_outbox(
    broker: Publisher,
    order: ReplyOrder,
    reply: OutboundReply,
    *,
    attempts: int,
    last_error: str,
) -> None:
    """Register the reply's place first, then publish it (confirmed): a reply published
    before its place was taken could be sent ahead of older ones."""
    await order.enqueue(reply.conversation, reply.reply_id)
    await broker.publish(
        broker.topology.outbox,
        encode(reply),
        message_id=reply.reply_id,
        correlation_id=reply.correlation_id,
        headers=RetryStory(
            attempts=attempts, first_failure=reply.created_at, last_error=last_error
        ).to_headers(),
    )
