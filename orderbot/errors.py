"""Every error orderbot raises on purpose, and the one question asked of any error.

A failure's family decides what happens to the message it interrupted::

    OrderbotError
    ├── Transient                the same operation may succeed once a dependency is back:
    │   │                        wait it out in place (runtime.waiting.until_done), never
    │   │                        nack into the delivery limit
    │   ├── BrokerUnavailable    no confirm: the caller must not acknowledge its input
    │   ├── LockLost             the customer's lock expired mid-step: start the step again
    │   └── TransientSendError   the provider may take it later (408, 425, 429, 5xx, timeout):
    │                            quick retries in the worker, then the outbox's delay tiers
    ├── Permanent                no retry can help: the message goes to the DLQ with why
    │   ├── PoisonMessage        a queue body no process can read (bad JSON, unknown version)
    │   └── PermanentSendError   the provider refused the reply for good (other 4xx)
    │       └── SenderUnavailable  the tenant cannot send on this channel (disabled, not set up)
    ├── Stopping                 the process is asked to stop while a dependency is down: the
    │                            message stays unacknowledged and the broker redelivers it
    └── SpoolFull                the edge spool is at SPOOL_MAX_BYTES: the one refusal (503)
                                 of a valid message left, so that the provider retries

`is_transient` answers for our own errors by their family first, then for the libraries'
(redis, asyncpg, sockets), whose outages look like ordinary exceptions.
"""

from __future__ import annotations

from enum import StrEnum

import asyncpg
import redis.exceptions


class OrderbotError(Exception):
    """The root of the errors above: `except OrderbotError` is every failure we named."""


class Transient(OrderbotError):
    """Retrying the same operation later may succeed."""


class Permanent(OrderbotError):
    """Retrying cannot succeed; the input is parked with the reason."""


class Stopping(OrderbotError):
    """The process is shutting down while a dependency is still unavailable."""


class SpoolFull(OrderbotError):
    """The edge spool cannot take another message; the webhook is answered 503."""


class BrokerUnavailable(Transient):
    """The broker did not confirm a publish; the caller must not acknowledge its input."""


class LockLost(Transient):
    """The customer's lock expired under us; the step must be retried from the start."""


class Unreadable(StrEnum):
    """Why a queue body cannot be read: the DLQ's reason code for it."""

    UNKNOWN_VERSION = "unknown_version"
    UNREADABLE = "unreadable"


class PoisonMessage(Permanent):
    """A body that can never be processed; it goes to the DLQ with this reason."""

    def __init__(self, reason: str, *, kind: Unreadable = Unreadable.UNREADABLE) -> None:
        super().__init__(reason)
        self.kind = kind


class SendError(OrderbotError):
    """A provider's send failed; `reason` is safe to log and to keep in DLQ headers."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class TransientSendError(SendError, Transient):
    def __init__(
        self, reason: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason, status=status)
        self.retry_after = retry_after


class PermanentSendError(SendError, Permanent):
    pass


class SenderUnavailable(PermanentSendError):
    """No sender can exist for this reply (disabled tenant, channel not set up).

    Permanent: the reply is parked in the DLQ with this reason, and an operator
    replays it once the tenant is fixed.
    """


_LIBRARY_TRANSIENT: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,  # a replica after failover
    redis.exceptions.OutOfMemoryError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, pg_terminate_backend
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby after failover
    asyncpg.exceptions.ConnectionDoesNotExistError,
    ConnectionError,
    TimeoutError,
    OSError,
)
# asyncpg's protocol, out of step with a connection the server ended: a terminated backend's
# FATAL read while the connection was idle, its close not yet. asyncpg aborts the connection
# on this error; its other InternalClientErrors (codecs, say) are bugs.
_ASYNCPG_BROKEN = ("another operation (", "protocol is in", "not connected")
# Redis answers these as plain errors while it cannot write for a while.
_REDIS_BUSY_PREFIXES = ("MISCONF", "BUSY", "TRYAGAIN", "LOADING", "CLUSTERDOWN")


def is_transient(exc: BaseException) -> bool:
    """Will the same operation likely succeed once a dependency recovers?"""
    if isinstance(exc, Transient):
        return True
    if isinstance(exc, OrderbotError):
        return False
    if isinstance(exc, asyncpg.exceptions._base.DataError):
        return False  # asyncpg's own encoding error: a bug, however often retried
    if isinstance(exc, _LIBRARY_TRANSIENT):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        return "connection" in str(exc).lower()  # e.g. "connection is closed"
    if isinstance(exc, asyncpg.InternalClientError):
        return any(words in str(exc) for words in _ASYNCPG_BROKEN)
    if isinstance(exc, redis.exceptions.ResponseError):
        return str(exc).startswith(_REDIS_BUSY_PREFIXES)
    if isinstance(exc, RuntimeError):
        # uvloop's word for a write to a connection the peer closed (redis-py and
        # asyncpg pass it on unchanged); any other RuntimeError is a bug.
        return "the handler is closed" in str(exc)
    return False
