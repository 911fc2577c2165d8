"""Specification: a deployment's keys of the untagged layout survive the upgrade.

`orderbot migrate` renames them to the tagged names (TTL kept); the processed-markers,
whose old names lack the customer, stay and are still read by a step while the flag
the migration sets lives.
"""

from __future__ import annotations

from datetime import timedelta

from redis.asyncio import Redis

from dialog import DialogState
from orderbot.config.settings import Settings
from orderbot.conversation.dialog_store import DialogStore
from orderbot.conversation.key_layout import retag_keys, tagged_name
from orderbot.conversation.keys import Keys
from orderbot.conversation.locks import ClientLocks
from orderbot.envelopes import Conversation, InboundMessage

CLIENT = "whatsapp:+77010000001"


def _conversation(settings: Settings) -> Conversation:
    return Conversation(tenant=settings.tenant, provider="twilio", client_id=CLIENT)


def _old(settings: Settings, what: str) -> str:
    return f"{settings.redis_key_prefix}{what}"


def test_each_kind_of_customer_key_has_its_tagged_name(settings: Settings) -> None:
    keys, conversation = Keys(settings.redis_key_prefix), _conversation(settings)
    c = f"{settings.tenant}:twilio:{CLIENT}"
    prefix = settings.redis_key_prefix
    expected = {
        f"dialog:{c}": keys.dialog(conversation),
        f"lock:{c}": keys.lock(conversation.key),
        f"rating:{c}": keys.rating(conversation),
        f"handoff:{c}": keys.handoff(conversation.key),
        f"ratelimit:customer:{c}": keys.customer_bucket(conversation),
        f"ratelimit:notice:{c}": keys.flood_notice(conversation),
        f"outbox:{c}:order": keys.outbox(conversation)[0],
        f"outbox:{c}:seen": keys.outbox(conversation)[1],
        f"outbox:{c}:seq": keys.outbox(conversation)[2],
        f"outbox:{c}:sent:SM1:0": keys.reply(conversation, "SM1:0")[0],
        f"outbox:{c}:sending:SM1:0": keys.reply(conversation, "SM1:0")[1],
    }
    assert {old: tagged_name(prefix, prefix + old) for old in expected} == expected


def test_keys_that_are_no_customers_or_already_tagged_keep_their_name(
    settings: Settings,
) -> None:
    prefix = settings.redis_key_prefix
    keys = Keys(prefix)
    for key in (
        keys.dialog(_conversation(settings)),
        f"{prefix}processed:{settings.tenant}:twilio:SM1",
        keys.send_bucket("twilio", settings.tenant),
        keys.reconcile_lease(),
        f"{prefix}own:{settings.tenant}:chat2desk:55",
        "someone-else:dialog:default:chat2desk:42",
    ):
        assert tagged_name(prefix, key) is None, key


async def test_migrate_moves_a_live_dialog_with_its_ttl(redis: Redis, settings: Settings) -> None:
    old = _old(settings, f"dialog:{settings.tenant}:twilio:{CLIENT}")
    await redis.set(old, DialogState(turns=3).model_dump_json(), px=600_000)

    done = await retag_keys(redis, settings.redis_key_prefix)

    new = Keys(settings.redis_key_prefix).dialog(_conversation(settings))
    assert done.renamed == 1
    assert not await redis.exists(old)
    assert DialogState.model_validate_json(await redis.get(new)).turns == 3
    assert 0 < await redis.pttl(new) <= 600_000


async def test_a_tagged_key_written_meanwhile_wins_over_the_old_one(
    redis: Redis, settings: Settings
) -> None:
    old = _old(settings, f"dialog:{settings.tenant}:twilio:{CLIENT}")
    new = Keys(settings.redis_key_prefix).dialog(_conversation(settings))
    await redis.set(old, DialogState(turns=3).model_dump_json(), px=600_000)
    await redis.set(new, DialogState(turns=4).model_dump_json(), px=600_000)

    done = await retag_keys(redis, settings.redis_key_prefix)

    assert (done.renamed, done.superseded) == (0, 1)
    assert not await redis.exists(old)
    assert DialogState.model_validate_json(await redis.get(new)).turns == 4


async def test_a_message_applied_before_the_upgrade_is_not_applied_again(
    redis: Redis, settings: Settings
) -> None:
    message = InboundMessage(message_id="SM1", conversation=_conversation(settings), text="hi")
    marker = _old(settings, f"processed:{settings.tenant}:twilio:SM1")
    await redis.set(marker, "1", px=600_000)

    done = await retag_keys(redis, settings.redis_key_prefix)

    assert done.untagged_markers == 1
    flag = Keys(settings.redis_key_prefix).untagged_markers()
    assert 0 < await redis.pttl(flag) <= 600_000
    store = DialogStore(
        redis,
        settings.redis_key_prefix,
        state_ttl=timedelta(minutes=5),
        dedupe_ttl=timedelta(minutes=5),
    )
    locks = ClientLocks(redis, settings.redis_key_prefix, timeout=5)
    async with locks.hold_loading(message.conversation.key, store.begin(message)) as lease:
        assert lease.loaded.processed


async def test_after_the_untagged_markers_expired_a_new_message_is_applied(
    redis: Redis, settings: Settings
) -> None:
    message = InboundMessage(message_id="SM2", conversation=_conversation(settings), text="hi")

    done = await retag_keys(redis, settings.redis_key_prefix)  # nothing untagged: no flag

    assert done.untagged_markers == 0
    assert not await redis.exists(Keys(settings.redis_key_prefix).untagged_markers())
    store = DialogStore(
        redis,
        settings.redis_key_prefix,
        state_ttl=timedelta(minutes=5),
        dedupe_ttl=timedelta(minutes=5),
    )
    locks = ClientLocks(redis, settings.redis_key_prefix, timeout=5)
    async with locks.hold_loading(message.conversation.key, store.begin(message)) as lease:
        assert not lease.loaded.processed
