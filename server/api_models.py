"""The request and error bodies of the operator API (the orders' own views are in
orderbot/orders/views.py), shared by its handlers and its OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dialog import OrderStatus


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
