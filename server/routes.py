"""Every URL the server answers, in one table."""

from __future__ import annotations

from aiohttp import web

from orderbot.runtime.ops import Probe, add_ops_routes, dependency_probes, health
from server.api import register_api
from server.api_events import api_events
from server.chat2desk import chat2desk_tenant_webhook, chat2desk_webhook
from server.console.app import register_console
from server.keys import BROKER, POSTGRES, REDIS, SETTINGS
from server.twilio import twilio_webhook
from server.twilio_status import twilio_status_webhook
from server.webchat import register_webchat

ENDPOINTS = (
    "POST /webhook/chat2desk/{token}",
    "POST /webhook/chat2desk/{tenant}/{token}",
    "POST /webhook/twilio",
    "POST /webhook/twilio/status",
    "GET /api/events",
    "GET /chat",
    "GET /chat/{tenant}",
    "POST /chat/{tenant}/messages",
    "GET /chat/{tenant}/events",
    "GET /health",
    "GET /health/ready",
    "GET /metrics",
    "GET /console/",
)


async def index(_: web.Request) -> web.Response:
    return web.json_response({"service": "orderbot", "endpoints": list(ENDPOINTS)})


def server_probes(app: web.Application) -> dict[str, Probe]:
    return dependency_probes(broker=app[BROKER], redis=app[REDIS], pool=app[POSTGRES])


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    if app[SETTINGS].server_metrics_port is None:
        add_ops_routes(app.router, lambda: server_probes(app))
    else:  # /metrics and /health/ready are served on the ops port (server/app.py)
        app.router.add_get("/health", health)
    app.router.add_post("/webhook/chat2desk/{token}", chat2desk_webhook)
    app.router.add_post("/webhook/chat2desk/{tenant}/{token}", chat2desk_tenant_webhook)
    app.router.add_post("/webhook/twilio", twilio_webhook)
    app.router.add_post("/webhook/twilio/status", twilio_status_webhook)
    register_api(app)
    register_console(app)
    app.router.add_get("/api/events", api_events)
    register_webchat(app)
