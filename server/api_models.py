"""The request and error bodies of the operator API (the orders' own views are in
orderbot/orders/views.py), shared by its handlers and its OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dialog import OrderStatus
from orderbot.orders.views import MAX_ID


class StatusChange(BaseModel):
    """The body of ``POST /api/orders/{id}/status``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: OrderStatus = Field(description="the status to move the order to")


class ErrorBody(BaseModel):
    """Every error: a short reason, and where useful what exactly was wrong."""

    error: str
    detail: Any = None


class TransitionRefused(ErrorBody):
    """409: the order cannot move to the asked status from the one it is in."""

    current: OrderStatus = Field(description="the order's status now")
    allowed: list[OrderStatus] = Field(description="what it may be moved to instead")


class ConversationFilter(BaseModel):
    """The query of ``GET /api/conversations``; unknown parameters are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    phone_or_client: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[\x20-\x7e]+$",
        description="only the customer with this client id, or whose phone has these digits",
    )
    after: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ID,
        description="the `next_after` of the previous page: conversations older than it",
    )
    limit: int = Field(default=50, ge=1, le=200, description="conversations per page")


class MessageFilter(BaseModel):
    """The query of ``GET /api/conversations/{id}/messages``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    after: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ID,
        description="the `next_after` of the previous page: messages newer than it",
    )
    limit: int = Field(default=100, ge=1, le=500, description="messages per page")
