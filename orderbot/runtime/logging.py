"""structlog setup shared by every process: one JSON object a line, secrets masked.

Secrets are masked by value, not by key name: a token can end up inside a URL, an
exception text or a provider's error body, and only a value match catches those. The
value in each of its derived forms (orderbot/config/secret_forms.py): a provider echoing our
Basic auth header echoes base64, not the token.
"""

from __future__ import annotations

import bisect
import logging
import sys
from collections.abc import Iterable, MutableMapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from orderbot.config.secret_forms import REDACTED, SHORTEST_SCHEMED, expand, mask
from orderbot.config.settings import Settings

__all__ = ["REDACTED", "SecretRedactor", "bound_fields", "configure_logging", "register_secrets"]

_FIELDS: ContextVar[dict[str, Any] | None] = ContextVar("orderbot_log_fields", default=None)


class bound_fields:
    """Fields that every line logged inside the block carries, like structlog's
    `bound_contextvars` but for a block entered for every message: one ContextVar set and
    reset, where structlog sets and resets one per field behind a generator."""

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def __enter__(self) -> None:
        outer = _FIELDS.get()
        self._token = _FIELDS.set({**outer, **self._fields} if outer else self._fields)

    def __exit__(self, *_: object) -> None:
        _FIELDS.reset(self._token)


def _merge_fields(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # After merge_contextvars and added like it adds its own (the role): the keys come out
    # in the order bound_contextvars gave them, and a line's own keys win.
    fields = _FIELDS.get()
    if fields:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
    return event_dict


class SecretRedactor:
    """structlog processor replacing every configured secret wherever it appears, in
    each of its derived forms (base64, Basic auth), and any credential after an auth
    scheme (`Bearer`, `Basic`, `Token`) even if it is no secret we know."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._given: set[str] = set()
        self._secrets: list[str] = []  # every form of each given secret, longest first
        self._lengths: list[int] = []  # their lengths, negated: ascending, for bisect
        self._shortest = SHORTEST_SCHEMED  # a shorter string holds nothing to mask
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Mask these too: tenant credentials are loaded after logging is set up."""
        new = {s for s in secrets if len(s) >= 4} - self._given
        if new:
            self._given |= new
            self._secrets = expand(self._given)
            self._lengths = [-len(form) for form in self._secrets]
            self._shortest = min(SHORTEST_SCHEMED, -self._lengths[-1])

    def _mask(self, value: Any) -> Any:
        if isinstance(value, str):
            # Only what is no longer than the text can be in it. Most values of a line
            # (its event, ids, a tenant) are shorter than any secret, yet each was
            # scanned for every form of every tenant's secrets: one line per webhook
            # cost 18 us with the settings' secrets and 115 us with 300 more.
            if len(value) < self._shortest:
                return value
            start = bisect.bisect_left(self._lengths, -len(value))
            return mask(value, self._secrets[start:] if start else self._secrets)
        if isinstance(value, dict):
            return {k: self._mask(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._mask(v) for v in value)
        if isinstance(value, BaseException):
            return self._mask(f"{type(value).__name__}: {value}")
        return value

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        return {key: self._mask(value) for key, value in event_dict.items()}


def register_secrets(secrets: Iterable[str]) -> None:
    """Add secrets to the redactor of the configured logging (if it is configured)."""
    values = list(secrets)
    for processor in structlog.get_config().get("processors", []):
        if isinstance(processor, SecretRedactor):
            processor.add(values)


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(settings: Settings, role: str, *, cache_loggers: bool = False) -> None:
    """`cache_loggers`: each logger keeps the configuration it first logged with, which
    spares every later call (also one below the level) building its bound logger anew.
    For a process that configures logging once, before its first line; not for code that
    may be configured again in the same interpreter (the CLI, tests)."""
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    renderer: Any
    if settings.log_format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    redactor = SecretRedactor(settings.secrets())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _merge_fields,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            redactor,
            # After the redactor: our own clock holds no secret, and is as long as many.
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=cache_loggers,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(role=role)
    # Libraries log through the standard library; route those lines through the same
    # redactor so a token in an aiohttp or aiormq message is masked as well.
    logging.basicConfig(
        level=max(level, logging.WARNING),
        stream=sys.stderr,
        format="%(message)s",
        force=True,
    )
    handler = logging.getLogger().handlers[0]
    handler.setFormatter(_RedactingFormatter(redactor, role))


class _RedactingFormatter(logging.Formatter):
    """A library's line as our own lines are: one JSON object with the same keys
    (event, level, timestamp, role), so a log collector needs no second rule."""

    def __init__(self, redactor: SecretRedactor, role: str) -> None:
        super().__init__()
        self._redactor = redactor
        self._role = role

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, tz=UTC)
        line = {
            "event": record.getMessage(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "role": self._role,
            "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _orjson_dumps(dict(self._redactor(None, "", line)))
