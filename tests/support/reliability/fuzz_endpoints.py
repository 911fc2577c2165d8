"""What the fuzzer sends to each HTTP endpoint, and what each endpoint's contract says
the answer must be.

Every endpoint is one `Endpoint`: a hypothesis strategy of `Probe`s (one request each,
with the answer its contract demands). The contract is decided by an oracle written
from the endpoint's specification, not from its code: Python's own json parser and the
field rules of the hook. Where the two JSON parsers may legitimately differ (numbers
beyond 64 bits, lone surrogates, nesting deeper than a parser's limit) the oracle
demands only "a 4xx or a 2xx, never a 5xx".

To fuzz a new endpoint, add an `Endpoint` to `ENDPOINTS` with its strategy and
oracle. (The operator API is fuzzed from its OpenAPI document: tests/server/test_openapi_fuzz.py.)
"""

from __future__ import annotations

import gzip
import json
import math
import re
import unicodedata
import zlib
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode

from hypothesis import strategies as st
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from tests.support.credentials import (
    PUBLIC_BASE_URL,
    TWILIO_NUMBER,
    TWILIO_SID,
    TWILIO_TOKEN,
    WEBHOOK_TOKEN,
)

Expect = Literal["queued", "ignored", "refused", "any"]
MAX_BODY = 1024 * 1024  # HTTP_MAX_BODY's default

CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/json; charset=latin-1",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=xyz",
            "",
        ]
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
)


@dataclass(frozen=True)
class Probe:
    """One request of the fuzzer, and the answer its endpoint's contract demands."""

    method: str
    path: str
    content_type: str | None
    body: bytes
    expect: Expect
    message_id: str | None = None  # what would be queued, for a valid client message
    headers: tuple[tuple[str, str], ...] = ()
    provider: str = "chat2desk"  # whose message it would be (its processed-marker's name)

    def describe(self) -> str:
        return f"{self.method} {self.path} [{self.content_type}] {self.body[:200]!r}"


@dataclass(frozen=True)
class Endpoint:
    name: str
    probes: st.SearchStrategy[Probe]


# Values that have broken JSON handlers before: wrong types, huge and odd numbers,
# unicode edge cases (NUL, RTL override, combining marks, astral plane, BOM).
EDGE_TEXT = st.one_of(
    st.text(max_size=50),
    st.sampled_from(["", " ", "\x00", "\u202e", "e\u0301", "\U0001f600", "\ufeff", "\u2028"]),
    # Invisible addresses: zero-width, bidi override, tag characters, noncharacters.
    st.sampled_from(["\u200b" * 10, "\u202e" * 6, "\U000e0041" * 8, "\ufdd0\uffff" * 4]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=100, max_size=200),
)
EDGE_NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
)
EDGE_VALUES: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    EDGE_NUMBERS,
    EDGE_TEXT,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _valid_id() -> st.SearchStrategy[object]:
    return st.one_of(
        st.integers(0, 2**53),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128),
    )


@st.composite
def _hook_object(draw: st.DrawFn) -> dict[str, Any]:
    """A Chat2Desk hook body: mostly well formed, with some fields replaced by edge values."""
    hook: dict[str, Any] = {
        "message_id": draw(_valid_id()),
        "client_id": draw(_valid_id()),
        "type": "from_client",
        "text": draw(EDGE_TEXT),
        "transport": draw(st.sampled_from(["whatsapp", "whatsapp", "wa\x00", "wa\x1b", "wa\x85"])),
        "channel_id": draw(_valid_id()),
    }
    for key in draw(st.sets(st.sampled_from([*hook, "hook_type", "dialog_id"]), max_size=3)):
        hook[key] = draw(EDGE_VALUES)
    for key in draw(st.sets(st.sampled_from(sorted(hook)), max_size=1)):
        del hook[key]
    hook.update(draw(st.dictionaries(st.text(max_size=8), EDGE_VALUES, max_size=2)))
    return hook


def _json_bytes(value: object, ensure_ascii: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


@st.composite
def _chat2desk_body(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(
            ["hook", "hook", "hook", "bytes", "deep", "duplicate keys", "form", "json", "huge"]
        )
    )
    if kind == "hook":
        return _json_bytes(draw(_hook_object()), draw(st.booleans()))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "deep":
        depth = draw(st.integers(1, 5000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        return opener * depth + b"1" * (opener != b"[") + closer * depth
    if kind == "duplicate keys":
        first, second = draw(_valid_id()), draw(EDGE_VALUES)
        hook = draw(_hook_object())
        hook.pop("message_id", None)
        text = json.dumps(hook)
        duplicated = f'{{"message_id": {json.dumps(first)}, "message_id": {json.dumps(second)}, '
        return (duplicated + text[1:]).encode("utf-8", "surrogatepass")
    if kind == "form":
        pairs = draw(
            st.lists(
                st.tuples(st.sampled_from(["message_id", "client_id", "text"]), EDGE_TEXT),
                max_size=4,
            )
        )
        return "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in pairs).encode()
    if kind == "json":
        return _json_bytes(draw(EDGE_VALUES), draw(st.booleans()))
    return b"x" * (MAX_BODY + 1)


@st.composite
def chat2desk_probes(draw: st.DrawFn) -> Probe:
    good_token = draw(st.integers(0, 9)) > 0
    token = WEBHOOK_TOKEN if good_token else quote(draw(st.text(max_size=30)), safe="")
    body = draw(_chat2desk_body())
    expect, message_id = chat2desk_contract(body) if good_token else ("refused", None)
    headers: tuple[tuple[str, str], ...] = ()
    encoding = draw(st.sampled_from([None] * 8 + ["gzip", "deflate"]))
    if encoding is not None:  # no provider compresses: refused, whatever it inflates to
        body = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
        headers, expect, message_id = (("Content-Encoding", encoding),), "refused", None
    return Probe(
        method="POST",
        path=f"/webhook/chat2desk/{token}",
        content_type=draw(st.none() | CONTENT_TYPES),
        body=body,
        expect=expect,
        message_id=message_id,
        headers=headers,
    )


def _valid_id_value(value: object, *, required: bool) -> str | Literal[False] | None:
    """The id as the server would carry it; None if absent and allowed; False if invalid."""
    if value is None:
        return False if required else None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not 1 <= len(value) <= 128:
        return False
    return value if all("\x21" <= c <= "\x7e" for c in value) else False


def _beyond_parsers(value: object, depth: int = 0) -> bool:
    """Does `value` hold what JSON parsers may disagree on?"""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -(2**63) <= value < 2**64
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, list):
        return depth > 200 or any(_beyond_parsers(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return depth > 200 or any(
            _beyond_parsers(k, depth + 1) or _beyond_parsers(v, depth + 1) for k, v in value.items()
        )
    return False


def _a_name(value: str, limit: int) -> bool:
    """A name (a transport) is at most `limit` characters, none of them a control
    character (Unicode category Cc); free text has its controls dropped, not refused."""
    return len(value) <= limit and not any(unicodedata.category(c) == "Cc" for c in value)


def chat2desk_contract(body: bytes) -> tuple[Expect, str | None]:
    """What POST /webhook/chat2desk/{right token} must answer to `body`."""
    if not body or len(body) > MAX_BODY:
        return "refused", None
    try:
        value = json.loads(body.decode("utf-8"))
    except RecursionError:
        return "any", None
    except ValueError:  # not UTF-8, or not JSON
        return "refused", None
    if _beyond_parsers(value):
        return "any", None
    if not isinstance(value, dict):
        return "refused", None
    kind, hook_type = value.get("type"), value.get("hook_type")
    if not isinstance(kind, str | None) or not isinstance(hook_type, str | None):
        return "refused", None
    if not (kind == "from_client" if kind is not None else hook_type == "inbox"):
        return "ignored", None
    message_id = _valid_id_value(value.get("message_id"), required=True)
    client_id = _valid_id_value(value.get("client_id"), required=True)
    text, transport = value.get("text"), value.get("transport")
    valid = (
        isinstance(message_id, str)
        and isinstance(client_id, str)
        and (text is None or (isinstance(text, str) and len(text) <= 20_000))
        and (transport is None or (isinstance(transport, str) and _a_name(transport, 64)))
        and _valid_id_value(value.get("channel_id"), required=False) is not False
        and _valid_id_value(value.get("dialog_id"), required=False) is not False
    )
    if not valid or not isinstance(message_id, str):
        return "refused", None
    return "queued", message_id


@st.composite
def any_route_probes(draw: st.DrawFn) -> Probe:
    """Any method on the other routes, or on paths that do not exist: never a 5xx."""
    path = draw(
        st.one_of(
            st.sampled_from(["/", "/health", "/metrics", "/webhook/chat2desk", "/webhook"]),
            st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30).map(
                lambda p: "/" + quote(p, safe="/")
            ),
            st.text("abc", max_size=30).map(lambda p: f"/webhook/{p}"),  # one metric label
        )
    )
    expect: Expect = "any"
    if draw(st.integers(0, 19)) == 0:
        # A request line over aiohttp's limit, token included: a JSON 400 without echo.
        path, expect = f"/webhook/chat2desk/{WEBHOOK_TOKEN}?pad={'x' * 9000}", "refused"
    return Probe(
        method=draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])),
        path=path,
        content_type=draw(st.none() | CONTENT_TYPES),
        body=draw(st.binary(max_size=100)),
        expect=expect,
    )


TWILIO_PATH = "/webhook/twilio"
TWILIO_FIELDS = (
    "MessageSid",
    "SmsSid",
    "AccountSid",
    "MessagingServiceSid",
    "From",
    "To",
    "Body",
    "NumMedia",
    "ProfileName",
    "WaId",
)
FORM = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 200  # Twilio sends about 20, 40 with ten media
_PRINTABLE = re.compile(r"[\x21-\x7e]+")
# Twilio's field rules, from its documentation: ids are a two-letter type and 32 hex
# digits, numbers are printable ASCII.
_TWILIO_LIMITS = {"From": 64, "To": 64, "WaId": 64}
_TWILIO_IDS = {
    "MessageSid": re.compile(r"(SM|MM)[0-9a-f]{32}"),
    "SmsSid": re.compile(r"(SM|MM)[0-9a-f]{32}"),
    "AccountSid": re.compile(r"AC[0-9a-f]{32}"),
    "MessagingServiceSid": re.compile(r"MG[0-9a-f]{32}"),
}
FORM_VALUES = st.one_of(
    EDGE_TEXT,
    EDGE_NUMBERS.map(str),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=60, max_size=70),
)


@st.composite
def _twilio_pairs(draw: st.DrawFn) -> list[tuple[str, str]]:
    """A Twilio form: mostly well formed, with edge values, dropped and repeated keys."""
    fields = {
        "MessageSid": draw(st.sampled_from(["SM", "SM", "MM"]))
        + f"{draw(st.integers(0, 2**128)):032x}",
        "AccountSid": draw(st.sampled_from([TWILIO_SID, TWILIO_SID, "AC" + "0" * 32])),
        "From": f"whatsapp:+996{draw(st.integers(0, 10**9 - 1)):09d}",
        "To": draw(st.sampled_from([TWILIO_NUMBER, TWILIO_NUMBER, "whatsapp:+10000000000"])),
        "Body": draw(EDGE_TEXT),
        "NumMedia": draw(st.sampled_from(["0", "1", "100", "101", "-1", "x", " 5", "1e3"])),
        "ProfileName": draw(EDGE_TEXT),
        "WaId": draw(st.text(max_size=70)),
    }
    for key in draw(st.sets(st.sampled_from(TWILIO_FIELDS), max_size=2)):
        fields[key] = draw(FORM_VALUES)
    for key in draw(st.sets(st.sampled_from([k for k in TWILIO_FIELDS if k != "To"]), max_size=1)):
        fields.pop(key, None)
    if "MessageSid" in fields and "NumMedia" in fields and draw(st.integers(0, 9)) == 0:
        # Re-cut: the signature of the form with NumMedia is the signature of this one.
        fields["MessageSid"] += "NumMedia" + fields.pop("NumMedia")
    pairs = list(fields.items())
    pairs += draw(st.lists(st.tuples(st.text(max_size=8), FORM_VALUES), max_size=2))
    for key in draw(st.lists(st.sampled_from(sorted(fields)), max_size=1)):  # a repeated key
        pairs.insert(draw(st.integers(0, len(pairs))), (key, draw(FORM_VALUES)))
    return pairs


@st.composite
def twilio_probes(draw: st.DrawFn) -> Probe:
    """POST /webhook/twilio: forms signed right, wrong or not at all, and other bodies."""
    pairs = draw(_twilio_pairs())
    body = urlencode(pairs).encode()
    content_type = draw(st.sampled_from([FORM, FORM, FORM, f"{FORM}; charset=utf-8"]))
    kind = draw(st.sampled_from(["form", "form", "form", "form", "bytes", "json", "type", "wide"]))
    if kind == "bytes":
        body = draw(st.binary(max_size=200))
    elif kind == "wide":  # the form padded with blank fields, around the bound
        body += b"&" * draw(st.sampled_from([150, 250, 120_000]))
    elif kind == "json":
        body, content_type = json.dumps(dict(pairs)).encode(), "application/json"
    elif kind == "type":
        content_type = draw(CONTENT_TYPES)
    signing = draw(st.sampled_from(["valid", "valid", "valid", "wrong", "none"]))
    expect, message_id = twilio_contract(content_type, body, signing)
    headers: list[tuple[str, str]] = []
    if signing != "none":
        signed = server_view(body) or []
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(
            f"{PUBLIC_BASE_URL}{TWILIO_PATH}", MultiDict(signed)
        )
        headers.append(("X-Twilio-Signature", signature if signing == "valid" else "x" + signature))
    return Probe(
        method="POST",
        path=TWILIO_PATH,
        content_type=content_type,
        body=body,
        expect=expect,
        message_id=message_id,
        headers=tuple(headers),
        provider="twilio",
    )


def server_view(body: bytes) -> list[tuple[str, str]] | None:
    """The form as any form parser reads it; None when the body is not UTF-8."""
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return None


def twilio_contract(content_type: str, body: bytes, signing: str) -> tuple[Expect, str | None]:
    """What POST /webhook/twilio must answer: a message for the tenant's number, signed
    with its auth token, with Twilio's fields valid, is queued; anything else refused."""
    if content_type.split(";")[0].strip().lower() != FORM:
        return ("refused" if content_type in (FORM, "application/json", "") else "any"), None
    if body.count(b"&") >= MAX_FORM_FIELDS:
        return "refused", None  # 413 before anything is parsed
    pairs = server_view(body)
    if pairs is None:
        return "refused", None
    to = next((value for name, value in pairs if name == "To"), None)
    if to != TWILIO_NUMBER or signing != "valid":
        return "refused", None  # 404 for another number, 403 for the signature
    names = [name for name, _ in pairs if name in TWILIO_FIELDS]
    if len(names) != len(set(names)):
        return "refused", None  # a Twilio field given twice
    fields = dict(pairs)
    required = ("MessageSid", "AccountSid", "From", "To")
    if any(name not in fields for name in required):
        return "refused", None
    for name, shape in _TWILIO_IDS.items():
        if name in fields and not shape.fullmatch(fields[name]):
            return "refused", None
    for name, limit in _TWILIO_LIMITS.items():
        value = fields.get(name)
        if value is not None and name in required and not _PRINTABLE.fullmatch(value):
            return "refused", None
        if value is not None and len(value) > limit:
            return "refused", None
    if len(fields.get("Body", "")) > 20_000 or len(fields.get("ProfileName", "")) > 256:
        return "refused", None
    media = fields.get("NumMedia", "0")
    if not re.fullmatch(r"[0-9]{1,3}", media):
        return "any", None  # how lax an integer parser is, is its own business
    if int(media) > 100:
        return "refused", None
    if fields["AccountSid"] != TWILIO_SID:
        return "refused", None  # signed with this tenant's token, for another account
    return "queued", fields["MessageSid"]


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("chat2desk webhook", chat2desk_probes()),
    Endpoint("twilio webhook", twilio_probes()),
    Endpoint("other routes", any_route_probes()),
)
