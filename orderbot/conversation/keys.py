"""Every Redis key orderbot writes, built in one place.

All keys start with REDIS_KEY_PREFIX, so tests and deployments sharing a Redis never
collide, and an operator can find (or delete) everything of one deployment.

Every key of one customer carries the customer as a Redis Cluster hash tag,
`{tenant:provider:client}` (the braces are literal): Redis hashes only the part
between the first `{` and the next `}`, so all of a customer's keys live in one slot
and the scripts that touch several of them (a step's `begin` and `commit`, the reply
order's) run on one Cluster node. The prefix must therefore hold no `{` (a setting
validator refuses one). The layout, by what a key holds (C = {tenant:provider:client}):

    {prefix}lock:C                                         the customer's lock
    {prefix}dialog:C                                       the dialog state (JSON)
    {prefix}processed:C:{message id}                       applied, as the dialog's n-th step
    {prefix}outbox:C:order                                 replies waiting, in order
    {prefix}outbox:C:seen | :seq | :sent:{id} | :sending:{id}
    {prefix}rating:C                                       the rating a customer owes
    {prefix}handoff:C                                      a person answers: the bot is silent
    {prefix}ratelimit:customer:C                           a customer's message budget
    {prefix}ratelimit:notice:C                             "please wait" was said
    {prefix}own:{tenant}:{provider}:{message id}           a message the bot sent itself
    {prefix}ratelimit:send:{provider}:{tenant}             the shared send bucket
    {prefix}reconcile:lease                                who reconciles now
    {prefix}reconcile:watermark:{tenant}:{provider}        how far the lists were read
    {prefix}workers:{messages queue}                       the workers' roll call
    {prefix}events:{tenant}                                the tenant's live events (stream)
    {prefix}console:signin:{client address}                console sign-in attempts
    {prefix}console:signedout:{session id}                 a console session signed out
    {prefix}chat:{tenant}:webchat:{session}                a web chat's messages (stream)
"""

from __future__ import annotations

from dataclasses import dataclass

from orderbot.envelopes import Conversation, InboundMessage


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @staticmethod
    def customer(conversation_key: str) -> str:
        """The customer's hash tag: every key of theirs hashes to this one slot."""
        return "{" + conversation_key + "}"

    def roll_call(self, messages_queue: str) -> str:
        return f"{self.prefix}workers:{messages_queue}"

    def lock(self, conversation_key: str) -> str:
        return f"{self.prefix}lock:{self.customer(conversation_key)}"

    def dialog(self, conversation: Conversation) -> str:
        return f"{self.prefix}dialog:{self.customer(conversation.key)}"

    def processed(self, message: InboundMessage) -> str:
        return self.processed_of(message.conversation.key, message.message_id)

    def processed_of(self, conversation_key: str, message_id: str) -> str:
        return f"{self.prefix}processed:{self.customer(conversation_key)}:{message_id}"

    def outbox(self, conversation: Conversation) -> tuple[str, str, str]:
        """The customer's waiting replies (sorted set), when each was last seen (hash),
        and the counter that numbers them."""
        base = f"{self.prefix}outbox:{self.customer(conversation.key)}"
        return f"{base}:order", f"{base}:seen", f"{base}:seq"

    def outbox_order(self, conversation: Conversation) -> str:
        return self.outbox(conversation)[0]

    def reply(self, conversation: Conversation, reply_id: str) -> tuple[str, str]:
        """The reply's sent-marker and its sending claim."""
        base = f"{self.prefix}outbox:{self.customer(conversation.key)}"
        return f"{base}:sent:{reply_id}", f"{base}:sending:{reply_id}"

    def rating(self, conversation: Conversation) -> str:
        return f"{self.prefix}rating:{self.customer(conversation.key)}"

    def handoff(self, conversation_key: str) -> str:
        return f"{self.prefix}handoff:{self.customer(conversation_key)}"

    def own_message(self, tenant: str, provider: str, message_id: str) -> str:
        return f"{self.prefix}own:{tenant}:{provider}:{message_id}"

    def customer_bucket(self, conversation: Conversation) -> str:
        return f"{self.prefix}ratelimit:customer:{self.customer(conversation.key)}"

    def flood_notice(self, conversation: Conversation) -> str:
        return f"{self.prefix}ratelimit:notice:{self.customer(conversation.key)}"

    def send_bucket(self, provider: str, tenant: str) -> str:
        return f"{self.prefix}ratelimit:send:{provider}:{tenant}"

    def reconcile_lease(self) -> str:
        return f"{self.prefix}reconcile:lease"

    def reconcile_watermark(self, tenant: str, provider: str) -> str:
        return f"{self.prefix}reconcile:watermark:{tenant}:{provider}"

    # Live events (orderbot/events): one stream per tenant.

    def events(self, tenant: str) -> str:
        return f"{self.prefix}events:{tenant}"

    # The operator console's keys.
    def console_signin(self, address: str) -> str:
        return f"{self.prefix}console:signin:{address}"

    def console_signed_out(self, session_id: str) -> str:
        return f"{self.prefix}console:signedout:{session_id}"

    def chat(self, conversation: Conversation) -> str:
        """A web chat session's messages, both ways: what its page shows."""
        return f"{self.prefix}chat:{conversation.key}"

    # --- the layout before the customer's hash tag -----------------------------------------

    def processed_untagged(self, message: InboundMessage) -> str:
        """A processed-marker as written before keys carried the customer's hash tag. Its
        name lacks the customer, so `orderbot migrate` cannot rename it to the tagged
        layout: steps read it too until the last one has expired (key_layout.py)."""
        c = message.conversation
        return f"{self.prefix}processed:{c.tenant}:{c.provider}:{message.message_id}"

    def untagged_markers(self) -> str:
        """Set by the migration to live as long as the longest-lived untagged marker."""
        return f"{self.prefix}layout:untagged-markers"
