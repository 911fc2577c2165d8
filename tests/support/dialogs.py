"""A customer message as the server queues it, and a customer's dialog state as stored."""

from __future__ import annotations

from redis.asyncio import Redis

from dialog import DialogState
from orderbot.config.settings import Settings
from orderbot.conversation.keys import Keys
from orderbot.envelopes import Conversation, InboundMessage, encode
from tests.support.customers import Customer


def envelope(settings: Settings, customer: Customer, text: str, message_id: str) -> bytes:
    return encode(
        InboundMessage(
            message_id=message_id,
            conversation=Conversation(
                tenant=settings.tenant,
                provider="chat2desk",
                client_id=customer.client_id,
                transport="whatsapp",
                channel_id="4242",
            ),
            text=text,
        )
    )


async def dialog_state(redis: Redis, settings: Settings, customer: Customer) -> DialogState:
    raw = await redis.get(
        Keys(settings.redis_key_prefix).dialog(
            Conversation(tenant=settings.tenant, provider="chat2desk", client_id=customer.client_id)
        )
    )
    assert raw is not None
    return DialogState.model_validate_json(raw)
