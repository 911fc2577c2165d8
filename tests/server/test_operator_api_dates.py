"""Creation-time filters take ISO 8601 only, as the OpenAPI document says (`date-time`):
a number is not silently read as a Unix timestamp."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic import ValidationError

from orderbot.orders.views import OrderFilter
from tests.support.operator_tools import get_json

Client = TestClient[Any, Any]


@pytest.mark.parametrize("value", ["1700000000", "1700000000000", "-1", "1e9", "0", "20240501"])
async def test_a_number_as_a_creation_time_filter_gets_422_naming_it(
    client: Client, value: str
) -> None:
    for name in ("created_from", "created_to"):
        status, body = await get_json(client, "/api/orders", **{name: value})
        assert status == 422, (name, value)
        assert [problem["field"] for problem in body["detail"]] == [name]
        assert "ISO 8601" in body["detail"][0]["problem"]


@pytest.mark.parametrize(
    "value", ["2024-05-01", "2024-05-01T06:00:00+06:00", "2024-05-01T00:00:00Z", "2024-05-01 10:00"]
)
def test_iso_8601_creation_times_are_read(value: str) -> None:
    assert OrderFilter.model_validate({"created_from": value}).created_from is not None


def test_a_number_is_refused_by_the_filter_model_itself() -> None:
    with pytest.raises(ValidationError):
        OrderFilter.model_validate({"created_to": 1700000000})
