"""The order's life after the dialog: which status may follow which, and who may set it.

One table and one check for every path that moves an order (the operator API, the customer's
rating in the worker), so no path can move an order in a way another would refuse. Pure: the
caller reads the current status under a row lock and asks here before it writes.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from dialog.state import Lang
from dialog.texts import Notice, render_notice


class OrderStatus(StrEnum):
    CONFIRMED = "CONFIRMED"
    PREPARING = "PREPARING"
    OUT_FOR_DELIVERY = "OUT_FOR_DELIVERY"
    DELIVERED = "DELIVERED"
    RATED = "RATED"
    CANCELLED = "CANCELLED"


class Actor(StrEnum):
    """Who asks for a transition: the kitchen and couriers, or the customer's own answer."""

    OPERATOR = "operator"
    CUSTOMER = "customer"


_S = OrderStatus

ALLOWED: Mapping[OrderStatus, frozenset[OrderStatus]] = MappingProxyType(
    {
        _S.CONFIRMED: frozenset({_S.PREPARING, _S.CANCELLED}),
        _S.PREPARING: frozenset({_S.OUT_FOR_DELIVERY, _S.CANCELLED}),
        _S.OUT_FOR_DELIVERY: frozenset({_S.DELIVERED, _S.CANCELLED}),
        _S.DELIVERED: frozenset({_S.RATED}),
        _S.RATED: frozenset(),
        _S.CANCELLED: frozenset(),
    }
)

# Only the customer's answer rates an order: a RATED set by an operator would carry no rating.
# CONFIRMED is where the dialog creates an order; nobody moves an order back to it.
SET_BY: Mapping[OrderStatus, Actor] = MappingProxyType(
    {
        _S.PREPARING: Actor.OPERATOR,
        _S.OUT_FOR_DELIVERY: Actor.OPERATOR,
        _S.DELIVERED: Actor.OPERATOR,
        _S.CANCELLED: Actor.OPERATOR,
        _S.RATED: Actor.CUSTOMER,
    }
)

_LIFE_ORDER = tuple(OrderStatus)


@dataclass(frozen=True, slots=True)
class Transition:
    source: OrderStatus
    target: OrderStatus


@dataclass(frozen=True, slots=True)
class Refused:
    """The move is not allowed; ``allowed`` is what this actor may do instead (maybe nothing)."""

    current: OrderStatus
    target: OrderStatus
    allowed: tuple[OrderStatus, ...]


def allowed_targets(current: OrderStatus, by: Actor = Actor.OPERATOR) -> tuple[OrderStatus, ...]:
    """The statuses ``by`` may move an order in ``current`` to, in the order of its life."""
    return tuple(s for s in _LIFE_ORDER if s in ALLOWED[current] and SET_BY.get(s) is by)


def check_transition(
    current: OrderStatus, target: OrderStatus, by: Actor = Actor.OPERATOR
) -> Transition | Refused:
    allowed = allowed_targets(current, by)
    if target in allowed:
        return Transition(current, target)
    return Refused(current, target, allowed)


_NOTICE_OF: Mapping[OrderStatus, Notice] = MappingProxyType(
    {
        _S.PREPARING: Notice.PREPARING,
        _S.OUT_FOR_DELIVERY: Notice.OUT_FOR_DELIVERY,
        _S.DELIVERED: Notice.DELIVERED,
        _S.CANCELLED: Notice.ORDER_CANCELLED,
    }
)


def status_notice(status: OrderStatus, lang: Lang, order_id: int) -> str | None:
    """What the customer is told when their order reaches ``status``.

    None for CONFIRMED and RATED: the worker's own reply (the dialog's acceptance, the thanks
    for a rating) already is that news.
    """
    notice = _NOTICE_OF.get(status)
    return None if notice is None else render_notice(notice, lang, order_id=order_id)


def notifies(status: OrderStatus) -> bool:
    """Does reaching ``status`` send the customer news (through the outbox)?"""
    return status in _NOTICE_OF


def asks_for_rating(status: OrderStatus) -> bool:
    """Reaching this status leaves the customer owing a rating."""
    return status is OrderStatus.DELIVERED
