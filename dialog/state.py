"""The conversation state the worker keeps in Redis between customer messages."""

from enum import StrEnum

import pydantic
from pydantic import Field


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


class Pin(pydantic.BaseModel, frozen=True):
    """A location the customer shared (a WhatsApp or Telegram pin), with the name of the
    place when the messenger sends one."""

    latitude: float = Field(ge=-90, le=90, allow_inf_nan=False)
    longitude: float = Field(ge=-180, le=180, allow_inf_nan=False)
    label: str | None = None


class Attachment(pydantic.BaseModel, frozen=True):
    """A photo, voice note or file the customer sent: kept as its link, never looked at."""

    url: str
    content_type: str | None = None


# An order keeps at most this many links: the state is read and written on every step.
MAX_ATTACHMENTS = 10


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
    # Added after states were first stored: a state written before reads with the defaults.
    pin: Pin | None = None
    attachments: tuple[Attachment, ...] = ()


class OrderDraft(pydantic.BaseModel, frozen=True):
    """A confirmed order, ready for the worker to insert."""

    address: str
    phone: str
    quantity: int
    pin: Pin | None = None
    attachments: tuple[Attachment, ...] = ()
