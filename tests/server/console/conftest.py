"""The console's browser tests: an orderbot server process on a port of its own, whose
PUBLIC_BASE_URL is that port's address (the origin its pages post from)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.browser import browsers
from tests.support.processes import free_port, wait_http_ok

__all__ = ["browsers"]


@pytest.fixture
def http_port() -> int:
    return free_port()


@pytest.fixture
def base_url(http_port: int) -> str:
    return f"http://127.0.0.1:{http_port}"


@pytest.fixture
async def console_server(
    spawn: Callable[..., Any], config: dict[str, str], http_port: int, base_url: str
) -> str:
    """A server process serving the console; its base URL."""
    await spawn("server", HTTP_PORT=str(http_port), PUBLIC_BASE_URL=base_url)
    await wait_http_ok(f"{base_url}/health")
    return base_url
