"""How customer messages are spread over the partitions of `messages`, and how the
partitions are shared among the live workers."""

from __future__ import annotations

from collections import Counter

from orderbot.amqp.partitions import share
from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings


def _topology(partitions: int = 16) -> Topology:
    return Topology.from_settings(
        Settings(_env_file=None, queue_prefix="p-", messages_partitions=partitions)
    )


def test_partitions_are_named_after_messages_with_their_index() -> None:
    assert _topology(3).partitions == ("p-messages.0", "p-messages.1", "p-messages.2")


def test_a_customer_goes_to_the_same_partition_in_every_process() -> None:
    # CRC-32 of the key, not Python's salted hash(): fixed values, the same everywhere.
    topology = _topology()
    assert topology.messages_for("default:chat2desk:42") == "p-messages.9"
    assert topology.messages_for("default:twilio:whatsapp:+996555123456") == "p-messages.3"
    assert _topology().messages_for("default:chat2desk:42") == "p-messages.9"


def test_customers_are_spread_over_every_partition() -> None:
    topology = _topology()
    spread = Counter(topology.messages_for(f"t:chat2desk:{i}") for i in range(1600))
    assert set(spread) == set(topology.partitions)
    assert max(spread.values()) < 2 * min(spread.values())


def test_every_partition_has_exactly_one_owner_whoever_is_alive() -> None:
    partitions = _topology().partitions
    for live in (["a"], ["a", "b"], ["a", "b", "c"], [f"w{i}" for i in range(20)]):
        owners = Counter(p for member in live for p in share(live, member, partitions))
        assert set(owners) == set(partitions)
        assert set(owners.values()) == {1}


def test_shares_differ_by_one_partition_at_most() -> None:
    partitions = _topology().partitions
    live = ["a", "b", "c"]
    assert sorted(len(share(live, m, partitions)) for m in live) == [5, 5, 6]


def test_a_worker_missing_from_the_roll_call_consumes_nothing() -> None:
    assert share(["a", "b"], "c", _topology().partitions) == frozenset()


def test_partitions_of_any_count_and_the_old_queue_are_customer_message_queues() -> None:
    topology = _topology(4)
    assert topology.is_messages_queue("p-messages")
    assert topology.is_messages_queue("p-messages.3")
    assert topology.is_messages_queue("p-messages.9")  # a partition of a former count
    assert not topology.is_messages_queue("p-outbox")
    assert not topology.is_messages_queue("p-messages.dlq")
