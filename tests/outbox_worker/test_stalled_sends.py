"""A customer who sends several answers at once while the provider stalls and then fails:
once it heals, each reply goes out once, in order, and the only extra copy is the stalled
send that reached the customer after its sender had given up on it: what the reliability
books count as a late provider answer.

Reduced from the provider reliability scenario with burst shoppers, where three wrong
phone numbers in a row were asked again three times after the provider healed, behind a
late copy of the first, and the books called the last of them a repeat no fault explains.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from orderbot.config.settings import Settings
from orderbot.conversation.reply_order import reply_order_for
from orderbot.envelopes import Conversation
from outbox_worker.service import run_outbox_worker
from tests.support.application_order import wait_applied
from tests.support.customers import Customer, expected_replies
from tests.support.reliability.books import causes_of_repeats, match_replies
from tests.support.reliability.chaos_provider import ChaosChat2Desk, running_chaos_provider
from tests.support.roles import in_process
from worker.service import run_worker

Client = TestClient[Any, Any]
WAIT = 30.0  # seconds for any one condition: generous, it is never waited out

FIRST = ["Hello", "Main street 12"]  # the bot asks for the phone number
BURST = ["ab", "Main street 12", "12345"]  # three answers that are no phone number


async def _deliveries(provider: ChaosChat2Desk, customer: Customer, count: int) -> None:
    await provider.wait_for(lambda: provider.count_for(customer.client_id) >= count, WAIT)


async def _post(client: Client, url: str, customer: Customer, text: str) -> str:
    body = customer.says(text)
    response = await client.post(url, json=body)
    assert response.status == 200
    return str(body["message_id"])


async def test_a_burst_of_wrong_numbers_through_a_stall_is_asked_again_once_each(
    make_settings: Callable[..., Settings],
    client: Client,
    amqp: AbstractChannel,
    redis: Redis,
    webhook_url: Callable[[str], str],
) -> None:
    url = webhook_url("")
    customer = Customer()
    async with running_chaos_provider() as provider:
        settings = make_settings(
            chat2desk_api_url=provider.url,
            send_timeout="300ms",
            send_attempts=1,  # the worker's one try stalls; the outbox takes over
            outbox_max_attempts=100_000,
        )
        conversation = Conversation(
            tenant=settings.tenant, provider="chat2desk", client_id=customer.client_id
        )
        order = reply_order_for(redis, settings)
        async with in_process(run_worker, settings), in_process(run_outbox_worker, settings):
            for sent, text in enumerate(FIRST, start=1):
                await _post(client, url, customer, text)
                await _deliveries(provider, customer, sent)

            provider.stalled_until = asyncio.Event()
            provider.set_mode("slow")
            asked = provider.requests
            burst = [await _post(client, url, customer, text) for text in BURST]
            # The first re-ask's send is stalled; every send after it is refused.
            await provider.wait_for(lambda: provider.requests > asked, WAIT)
            provider.set_mode("fail")
            await wait_applied(
                redis, settings, {customer.client_id: burst}, timeout=WAIT
            )  # all three in the outbox
            provider.stalled_until.set()  # the stalled send reaches the customer, late
            await provider.wait_for(lambda: provider.late_deliveries == 1, WAIT)
            provider.set_mode("ok")

            owed = expected_replies([*FIRST, *BURST])
            await _deliveries(provider, customer, len(owed) + 1)
            async with asyncio.timeout(WAIT):  # nothing of the customer's is waiting any more
                while await order.has_waiting(conversation):
                    await asyncio.sleep(0.02)

    delivered = provider.texts_for(customer.client_id)
    log = provider.log_for(customer.client_id)
    reask = owed[-1]
    assert owed[-3:] == [reask] * 3
    assert delivered == [*owed[:-3], *[reask] * 4]
    assert [late for _, late in log] == [False, False, True, False, False, False]
    match = match_replies(owed, delivered)
    assert (match.missing, match.unexpected, len(match.repeats)) == (0, [], 1)
    born = [0.0] * len(owed)  # no fault happened: when each was owed does not matter
    assert causes_of_repeats(match, delivered, log, born, []) == ["late provider answer"]
