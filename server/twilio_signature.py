"""Twilio's request signature: HMAC-SHA1 over the URL Twilio called and the POST
parameters, sorted by name (and by value within a name), base64-encoded.

Twilio signs the public URL it was configured with; behind a proxy that differs
from what the server sees, so PUBLIC_BASE_URL names it. Twilio may or may not
include a default port in that URL, so both forms are tried, as its own
validator does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit


def compute_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    payload = url + "".join(
        name + value for name in sorted(values) for value in sorted(values[name])
    )
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _port_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    if parts.port is not None:
        return [url, urlunsplit(parts._replace(netloc=host))] if parts.port == default else [url]
    if default is None:
        return [url]
    return [url, urlunsplit(parts._replace(netloc=f"{host}:{default}"))]


def is_valid(
    auth_token: str, url: str, params: list[tuple[str, str]], signature: str | None
) -> bool:
    if not signature:
        return False
    return any(
        hmac.compare_digest(compute_signature(auth_token, candidate, params), signature)
        for candidate in _port_variants(url)
    )
