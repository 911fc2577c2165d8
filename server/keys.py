"""The server app's shared objects, by key: a leaf module that every handler may import.

Each is set by the cleanup context that owns its lifetime (server/app.py and the
operator API's context) and read by the handlers through `request.app[KEY]`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from orderbot.amqp.link import BrokerLink
from orderbot.config.settings import Settings
from orderbot.events.bus import EventBus
from orderbot.tenancy.directory import TenantDirectory

if TYPE_CHECKING:
    from server.api import OperatorApi
    from server.console.state import Console
    from server.ingest import Ingest
    from server.sse import StreamSlots
    from server.webchat import Webchat

SETTINGS = web.AppKey("settings", Settings)
BROKER = web.AppKey("broker", BrokerLink)
REDIS = web.AppKey("redis", Redis)
POSTGRES = web.AppKey("postgres", asyncpg.Pool)
TENANTS = web.AppKey("tenants", TenantDirectory)
READ_TIMEOUT = web.AppKey("read_timeout", float)  # seconds: HTTP_READ_TIMEOUT
INGEST: web.AppKey[Ingest] = web.AppKey("ingest")
API: web.AppKey[OperatorApi] = web.AppKey("operator_api")
CONSOLE: web.AppKey[Console] = web.AppKey("console")

# Live events and the web chat.
EVENTS = web.AppKey("events", EventBus)
CLOSING = web.AppKey("closing", asyncio.Event)  # set at shutdown: event streams end
STREAMS: web.AppKey[StreamSlots] = web.AppKey("event_streams")
WEBCHAT: web.AppKey[Webchat] = web.AppKey("webchat")
