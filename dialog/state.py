"""The conversation state the worker keeps in Redis between customer messages."""

from enum import StrEnum

import pydantic


class Step(StrEnum):
    INITIAL = "initial"
    WAITING_ADDRESS = "waiting_address"
    WAITING_PHONE = "waiting_phone"
    WAITING_QUANTITY = "waiting_quantity"
    WAITING_CONFIRMATION = "waiting_confirmation"
    COMPLETED = "completed"


class Lang(StrEnum):
    EN = "en"
    RU = "ru"


class DialogState(pydantic.BaseModel, frozen=True):
    """Everything needed to interpret the customer's next message.

    ``turns`` counts every message ever applied and is never reset, so the worker can tell a
    lost update (two steps computed from the same stored state) from a legitimate one.
    """

    step: Step = Step.INITIAL
    lang: Lang = Lang.RU
    address: str | None = None
    phone: str | None = None
    quantity: int | None = None
    turns: int = 0


class OrderDraft(pydantic.BaseModel, frozen=True):
    """A confirmed order, ready for the worker to insert."""

    address: str
    phone: str
    quantity: int
