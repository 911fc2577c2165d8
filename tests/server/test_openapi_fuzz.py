"""Requests generated from /api/openapi.json, valid and not, against the running server.

What Schemathesis would do, in a page of hypothesis: each documented operation gets path
parameters, query parameters, credentials and bodies drawn from the document's own schemas,
mixed with junk of every shape. No answer may be a 5xx, every status must be one the document
lists for that operation, and every JSON answer must match its documented model.
"""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlencode

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from orderbot.config.settings import Settings
from orderbot.history.models import ConversationPage, MessagePage
from orderbot.orders.views import OrderDetail, OrderPage
from server.api_models import ErrorBody, TransitionRefused
from server.openapi import openapi_document
from tests.support.credentials import OPERATOR_KEY, WEBHOOK_TOKEN
from tests.support.customers import Customer
from tests.support.operator_tools import insert_order

Client = TestClient[Any, Any]
Schema = dict[str, Any]

DOCUMENT = openapi_document()
DEFINITIONS: Schema = DOCUMENT["components"]["schemas"]
OPERATIONS = [
    (method.upper(), path, operation)
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
]
MODELS: dict[str, type[BaseModel]] = {
    model.__name__: model
    for model in (
        OrderPage,
        OrderDetail,
        ErrorBody,
        TransitionRefused,
        ConversationPage,
        MessagePage,
    )
}

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=8,
)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
# Header values and path segments a client can send as they are (no CR/LF, no "/", "?",
# "#", "%", and no "." or ".." that the URL would resolve away).
PRINTABLE = st.text(st.sampled_from(string.ascii_letters + string.digits + "-_.~!$&'()*+,;=:@ "))
SEGMENT = PRINTABLE.filter(lambda s: s.strip(".") != "")  # never empty, "." or ".."
OFFSETS = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)


def from_schema(schema: Schema) -> st.SearchStrategy[Any]:
    """Values valid under the subset of JSON Schema pydantic writes."""
    if "$ref" in schema:
        return from_schema(DEFINITIONS[schema["$ref"].rsplit("/", 1)[1]])
    if "allOf" in schema:
        return _object(_merged(schema["allOf"]))
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return st.one_of([from_schema(option) for option in options])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if kind == "string":
        return _string(schema)
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})), max_size=3)
    if kind == "object":
        return _object(schema)
    return JSON


def _string(schema: Schema) -> st.SearchStrategy[str]:
    low, high = schema.get("minLength", 0), schema.get("maxLength", 60)
    if schema.get("format") == "date-time":
        moments = st.datetimes(
            min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=OFFSETS
        )
        return moments.map(datetime.isoformat)
    if "pattern" in schema:
        matching = st.from_regex(str(schema["pattern"]), fullmatch=True)
        return matching.filter(lambda s: low <= len(s) <= high)
    return st.text(min_size=low, max_size=high)


def _merged(parts: list[Schema]) -> Schema:
    merged: Schema = {"type": "object", "properties": {}, "required": []}
    for part in parts:
        resolved = DEFINITIONS[part["$ref"].rsplit("/", 1)[1]] if "$ref" in part else part
        merged["properties"].update(resolved.get("properties", {}))
        merged["required"].extend(resolved.get("required", []))
    return merged


def _object(schema: Schema) -> st.SearchStrategy[dict[str, Any]]:
    properties: dict[str, Schema] = schema.get("properties", {})
    required = set(schema.get("required", []))
    return st.fixed_dictionaries(
        {name: from_schema(s) for name, s in properties.items() if name in required},
        optional={name: from_schema(s) for name, s in properties.items() if name not in required},
    )


def valid_or_junk(schema: Schema) -> st.SearchStrategy[Any]:
    return st.one_of(from_schema(schema), JSON)


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def as_json(value: Any) -> bytes:
    """Integers past 64 bits and infinities included: junk is meant to be awkward."""
    return json.dumps(value, ensure_ascii=False).encode()


@pytest.fixture
async def seeded(db: asyncpg.Connection, settings: Settings) -> list[int]:
    """Real orders of this key's tenant in every status, so valid ids reach real rows."""
    client_id = Customer().client_id
    statuses = ["CONFIRMED", "PREPARING", "OUT_FOR_DELIVERY", "DELIVERED", "RATED", "CANCELLED"]
    return [
        await insert_order(db, tenant=settings.tenant, client_id=client_id, status=status)
        for status in statuses
    ]


async def test_the_served_document_is_the_built_one_and_every_ref_resolves(
    client: Client,
) -> None:
    response = await client.get("/api/openapi.json")
    assert response.status == 200
    served = await response.json()
    assert served == orjson.loads(orjson.dumps(DOCUMENT))
    assert served["openapi"].startswith("3.1")
    refs = {ref for ref in _refs(served)}
    assert refs <= {f"#/components/schemas/{name}" for name in DEFINITIONS}
    assert {path for _, path, _ in OPERATIONS} >= {
        "/api/orders",
        "/api/orders/{order_id}",
        "/api/orders/{order_id}/status",
        "/webhook/chat2desk/{token}",
    }


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


_CASES = [
    pytest.param(
        method,
        path,
        operation,
        id=operation["operationId"],
    )
    for method, path, operation in OPERATIONS
]


@pytest.mark.parametrize(("method", "path", "operation"), _CASES)
@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_no_generated_request_gets_a_5xx_or_an_undocumented_answer(
    client: Client,
    seeded: list[int],
    method: str,
    path: str,
    operation: Schema,
    data: st.DataObject,
) -> None:
    url, query, headers = path, {}, {}
    for parameter in operation.get("parameters", []):
        name, schema, where = parameter["name"], parameter["schema"], parameter["in"]
        if where == "path":
            known = [str(i) for i in seeded] if name == "order_id" else [WEBHOOK_TOKEN]
            value = data.draw(
                st.one_of(st.sampled_from(known), from_schema(schema).map(as_text), SEGMENT),
                label=name,
            )
            url = url.replace(f"{{{name}}}", quote(value, safe=""))
        elif where == "query" and data.draw(st.booleans(), label=f"with {name}"):
            query[name] = data.draw(st.one_of(valid_or_junk(schema).map(as_text), TEXT), label=name)
        elif where == "header":
            headers[name] = data.draw(PRINTABLE, label=name)
    if operation.get("security"):
        kind = data.draw(  # mostly authorized, to get past the door
            st.sampled_from(["key"] * 7 + ["wrong", "junk", "none"]), label="Authorization"
        )
        authorization = {"key": f"Bearer {OPERATOR_KEY}", "wrong": "Bearer not-the-key"}.get(kind)
        if kind == "junk":
            authorization = data.draw(PRINTABLE, label="junk Authorization")
        if authorization is not None:
            headers["Authorization"] = authorization
    body = _draw_body(data, operation, headers)

    response = await client.request(method, url, params=query, data=body, headers=headers)

    assert response.status < 500, await response.text()
    documented = operation["responses"]
    assert str(response.status) in documented, (response.status, await response.text())
    content = documented[str(response.status)].get("content", {})
    if "application/json" in content:
        assert response.content_type == "application/json"
        answer = await response.json()
        ref = content["application/json"]["schema"].get("$ref")
        if ref is not None:
            MODELS[ref.rsplit("/", 1)[1]].model_validate(answer, strict=False)
        else:
            assert (
                answer["status"]
                in content["application/json"]["schema"]["properties"]["status"]["enum"]
            )
    response.close()  # an event stream's answer never ends by itself


def _draw_body(data: st.DataObject, operation: Schema, headers: dict[str, str]) -> bytes | None:
    body = operation.get("requestBody")
    if body is None:
        return None
    if "application/json" in body["content"]:
        headers["Content-Type"] = "application/json"
        schema = body["content"]["application/json"]["schema"]
        return data.draw(
            st.one_of(
                valid_or_junk(schema).map(as_json),
                st.binary(max_size=64),
                TEXT.map(str.encode),
            ),
            label="body",
        )
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    schema = body["content"]["application/x-www-form-urlencoded"]["schema"]
    fields = data.draw(
        st.one_of(from_schema(schema), st.dictionaries(TEXT, TEXT, max_size=4)), label="form"
    )
    return urlencode({k: as_text(v) for k, v in fields.items()}).encode()


def test_datetimes_in_the_generated_range_are_iso_strings() -> None:
    """The generator itself: a guard that date-time values are what the API reads."""
    value = datetime(2024, 1, 1, tzinfo=UTC).isoformat()
    assert datetime.fromisoformat(value) == datetime(2024, 1, 1, tzinfo=UTC)
