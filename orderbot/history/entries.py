"""History entries from what travels through the pipeline: a customer's message, a reply."""

from __future__ import annotations

from orderbot.envelopes import InboundMessage, OutboundReply, utcnow
from orderbot.history.models import HistoryEntry, MessageStatus


def inbound(message: InboundMessage) -> HistoryEntry:
    conversation = message.conversation
    return HistoryEntry(
        tenant=conversation.tenant,
        provider=conversation.provider,
        client_id=conversation.client_id,
        direction="in",
        key=message.message_id,
        text=message.text,
        at=message.received_at,
        status="received",
        status_at=message.received_at,
        client_phone=message.own_phone,
        provider_message_id=message.message_id,
    )


def outbound(
    reply: OutboundReply,
    status: MessageStatus,
    *,
    provider_message_id: str | None = None,
    error: str | None = None,
) -> HistoryEntry:
    conversation = reply.conversation
    return HistoryEntry(
        tenant=conversation.tenant,
        provider=conversation.provider,
        client_id=conversation.client_id,
        direction="out",
        key=reply.reply_id,
        text=reply.text,
        at=reply.created_at,
        status=status,
        status_at=utcnow(),
        provider_message_id=provider_message_id,
        reply_id=reply.reply_id,
        error=error[:500] if error else None,
    )
