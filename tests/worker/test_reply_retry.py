"""The quick retry of a reply send leaves a trace of each failed try: a send that timed
out may still have reached the customer, and the retry then says the reply twice."""

from __future__ import annotations

from redis.asyncio import Redis
from structlog.testing import capture_logs

from orderbot.amqp.testing import InMemoryBroker
from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings
from orderbot.envelopes import Conversation
from orderbot.errors import TransientSendError
from tests.support.steps import reply_dispatcher


class FailsOnce:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.failed = False

    async def send(self, conversation: Conversation, text: str) -> str:
        if not self.failed:
            self.failed = True
            raise TransientSendError("timed out", status=None)
        self.sent.append(text)
        return "provider-id"


async def test_a_failed_try_of_the_quick_retry_is_logged_once_at_warning(
    settings: Settings, redis: Redis
) -> None:
    sender = FailsOnce()
    broker = InMemoryBroker(Topology.from_settings(settings))
    replies = reply_dispatcher(broker, settings, redis, sender, attempts=3)
    conversation = Conversation(tenant="t", provider="chat2desk", client_id="c1")

    with capture_logs() as logs:
        await replies.deliver(conversation, "m1", ["hello"], waiting=False)

    assert sender.sent == ["hello"]
    assert broker.published == []
    retries = [entry for entry in logs if entry["event"] == "reply_send_retry"]
    assert len(retries) == 1
    assert retries[0]["log_level"] == "warning"
    assert retries[0]["reply_id"] == "m1:0"
    assert retries[0]["attempt"] == 1
