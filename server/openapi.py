"""The OpenAPI 3.1 document of the operator API and the webhooks, served at /api/openapi.json.

Built from the very pydantic models the handlers validate with and answer in, so the
document cannot drift from the code; OpenAPI 3.1 schemas are JSON Schema 2020-12, which is
what pydantic writes. Client generators and the fuzz test
(tests/server/test_openapi_fuzz.py) read it.
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from orderbot.events.models import LiveEvent
from orderbot.history.models import ConversationPage, MessagePage
from orderbot.orders.views import OrderDetail, OrderFilter, OrderPage
from server.api_models import (
    ConversationFilter,
    ErrorBody,
    MessageFilter,
    StatusChange,
    TransitionRefused,
)
from server.chat2desk import Chat2DeskEvent, Chat2DeskInbound, Chat2DeskOutboxStatus
from server.twilio import TwilioInbound
from server.twilio_status import TwilioStatusCallback

_REF = "#/components/schemas/{model}"
_MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (OrderPage, "serialization"),
    (OrderDetail, "serialization"),
    (ErrorBody, "serialization"),
    (TransitionRefused, "serialization"),
    (StatusChange, "validation"),
    (OrderFilter, "validation"),
    (Chat2DeskEvent, "validation"),
    (Chat2DeskInbound, "validation"),
    (TwilioInbound, "validation"),
    (ConversationPage, "serialization"),
    (MessagePage, "serialization"),
    (ConversationFilter, "validation"),
    (MessageFilter, "validation"),
    (Chat2DeskOutboxStatus, "validation"),
    (TwilioStatusCallback, "validation"),
    (LiveEvent, "serialization"),
]
_ERRORS = {
    400: "malformed request (or Last-Event-ID)",
    401: "missing or invalid API key (see WWW-Authenticate)",
    403: "invalid webhook token or signature",
    404: "no such order for this key's tenant, or the operator API is disabled",
    409: "the order cannot move to that status; `allowed` lists what it can",
    413: "request body too large",
    415: "unsupported content type",
    422: "invalid query or body; `detail` names each bad field",
    429: "rate limited, or too many open event streams; see Retry-After",
    503: "a dependency is unavailable; retry after Retry-After",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _segment(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        # One path segment, and not "." or ".." (which a URL resolves away).
        "schema": {"type": "string", "pattern": "^[^{}/]*[^{}/.][^{}/]*$"},
    }


def _chat2desk_hook(operation_id: str, summary: str, *parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": list(parameters),
            "requestBody": {"required": True, "content": _json(_CHAT2DESK_HOOK)},
            "responses": _responses(
                {"description": "queued, duplicate or ignored", "content": _json(_STATUS)},
                *(400, 403, 404, 413, 422, 429, 503),
            ),
        }
    }


def _responses(ok: dict[str, Any], *errors: int) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok}
    for status in errors:
        model = TransitionRefused if status == 409 else ErrorBody
        responses[str(status)] = {"description": _ERRORS[status], "content": _json(_ref(model))}
    return responses


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent rather than null."""
    options = schema.get("anyOf")
    if not options:
        return schema
    kept = [option for option in options if option != {"type": "null"}]
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    return {**rest, **kept[0]} if len(kept) == 1 else {**rest, "anyOf": kept}


def _query_parameters(
    definitions: dict[str, Any], model: type[BaseModel] = OrderFilter
) -> list[dict[str, Any]]:
    properties: dict[str, Any] = definitions[model.__name__]["properties"]
    parameters = []
    for name, schema in properties.items():
        description = schema.get("description", "")
        clean = {k: v for k, v in _without_null(schema).items() if k != "description"}
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": description,
                "schema": clean,
            }
        )
    return parameters


_ORDER_ID = {
    "name": "order_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
}
_SECURED: list[dict[str, list[str]]] = [{"operatorKey": []}]


@functools.cache
def openapi_document() -> dict[str, Any]:
    _, top = models_json_schema(_MODELS, ref_template=_REF)
    definitions: dict[str, Any] = top["$defs"]
    try:
        release = version("orderbot")
    except PackageNotFoundError:
        release = "0"
    paths: dict[str, Any] = {
        "/api/orders": {
            "get": {
                "operationId": "listOrders",
                "summary": "This tenant's orders, newest first, one keyset page at a time",
                "security": _SECURED,
                "parameters": _query_parameters(definitions),
                "responses": _responses(
                    {"description": "a page of orders", "content": _json(_ref(OrderPage))},
                    401,
                    404,
                    422,
                    503,
                ),
            }
        },
        "/api/orders/{order_id}": {
            "get": {
                "operationId": "getOrder",
                "summary": "One order with its status history",
                "security": _SECURED,
                "parameters": [_ORDER_ID],
                "responses": _responses(
                    {"description": "the order", "content": _json(_ref(OrderDetail))},
                    401,
                    404,
                    503,
                ),
            }
        },
        "/api/orders/{order_id}/status": {
            "post": {
                "operationId": "changeOrderStatus",
                "summary": "Move the order to another status; the customer is told through "
                "the outbox",
                "security": _SECURED,
                "parameters": [_ORDER_ID],
                "requestBody": {"required": True, "content": _json(_ref(StatusChange))},
                "responses": _responses(
                    {
                        "description": "the order after the change",
                        "content": _json(_ref(OrderDetail)),
                    },
                    401,
                    404,
                    409,
                    413,
                    422,
                    503,
                ),
            }
        },
        "/api/conversations": {
            "get": {
                "operationId": "listConversations",
                "summary": "This tenant's conversations, newest first, one keyset page at a time",
                "security": _SECURED,
                "parameters": _query_parameters(definitions, ConversationFilter),
                "responses": _responses(
                    {
                        "description": "a page of conversations",
                        "content": _json(_ref(ConversationPage)),
                    },
                    401,
                    404,
                    422,
                    503,
                ),
            }
        },
        "/api/conversations/{conversation_id}/messages": {
            "get": {
                "operationId": "listConversationMessages",
                "summary": "A conversation's messages both ways with their delivery status, "
                "oldest first",
                "security": _SECURED,
                "parameters": [
                    {**_ORDER_ID, "name": "conversation_id"},
                    *_query_parameters(definitions, MessageFilter),
                ],
                "responses": _responses(
                    {"description": "a page of messages", "content": _json(_ref(MessagePage))},
                    401,
                    404,
                    422,
                    503,
                ),
            }
        },
        "/api/events": {
            "get": {
                "operationId": "liveEvents",
                "summary": "This tenant's live events as Server-Sent Events (event: order, "
                "message, status or conversation; data: the event as JSON), held open with "
                "keep-alive comments; a reconnect with Last-Event-ID reads on from there",
                "security": _SECURED,
                "parameters": [
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "the id of the last event read (EventSource sends it)",
                        "schema": {"type": "string", "pattern": r"^\d{1,20}-\d{1,20}$"},
                    }
                ],
                "responses": _responses(
                    {
                        "description": "the event stream",
                        "content": {"text/event-stream": {"schema": _ref(LiveEvent)}},
                    },
                    400,
                    401,
                    404,
                    429,
                ),
            }
        },
        "/webhook/chat2desk/{token}": _chat2desk_hook(
            "chat2deskWebhook",
            "Chat2Desk's hook: a client message is queued, other events ignored",
            _segment("token", "a tenant's Chat2Desk webhook token (CHAT2DESK_WEBHOOK_TOKEN)"),
        ),
        "/webhook/chat2desk/{tenant}/{token}": _chat2desk_hook(
            "chat2deskTenantWebhook",
            "Chat2Desk's hook at a tenant's own URL: the token must be that tenant's",
            _segment("tenant", "the tenant's slug"),
            _segment("token", "the tenant's Chat2Desk webhook token"),
        ),
        "/webhook/twilio": {
            "post": {
                "operationId": "twilioWebhook",
                "summary": "Twilio's WhatsApp hook, signed with X-Twilio-Signature",
                "parameters": [
                    {
                        "name": "X-Twilio-Signature",
                        "in": "header",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {"schema": _ref(TwilioInbound)}
                    },
                },
                "responses": {
                    **_responses(
                        {
                            "description": "queued: an empty TwiML response",
                            "content": {"text/xml": {"schema": {"type": "string"}}},
                        },
                        400,
                        403,
                        404,
                        413,
                        415,
                        422,
                        429,
                        503,
                    )
                },
            }
        },
    }
    paths["/webhook/twilio/status"] = {
        "post": {
            "operationId": "twilioStatusCallback",
            "summary": "Twilio's status callback of a reply, signed with X-Twilio-Signature",
            "parameters": [
                {
                    "name": "X-Twilio-Signature",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {"schema": _ref(TwilioStatusCallback)}
                },
            },
            "responses": {
                "204": {"description": "recorded (or a status that says nothing new)"},
                **{
                    k: v
                    for k, v in _responses(
                        {"description": "unused"}, 400, 403, 404, 413, 415, 422, 503
                    ).items()
                    if k != "200"
                },
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "orderbot",
            "version": release,
            "description": "The operator API (bearer OPERATOR_API_KEY) and the webhooks.",
        },
        "paths": paths,
        "components": {
            "schemas": definitions,
            "securitySchemes": {
                "operatorKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the deployment's OPERATOR_API_KEY",
                }
            },
        },
    }


# Chat2Desk posts every event of an account to one URL; a client's message (type
# "from_client", or hook_type "inbox" in older hooks) is the one that is queued.
_CHAT2DESK_HOOK = {
    "anyOf": [
        {
            "allOf": [
                _ref(Chat2DeskInbound),
                {
                    "type": "object",
                    "properties": {"type": {"const": "from_client"}},
                    "required": ["type"],
                },
            ]
        },
        _ref(Chat2DeskOutboxStatus),
        _ref(Chat2DeskEvent),
    ]
}
_STATUS = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["queued", "duplicate", "ignored", "recorded"]}
    },
    "required": ["status"],
}
