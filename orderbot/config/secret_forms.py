"""The forms a secret takes on its way out: as itself, base64-encoded, inside a Basic
auth header, after an auth scheme. Masking only the exact value missed a provider
error body that echoed the Twilio Basic header (base64 of `sid:token`), which went
into a log line and a DLQ header. Pure functions, shared by the log redactor and the
senders that build error texts.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable

REDACTED = "[redacted]"

# A credential after an HTTP auth scheme, whoever's it is: even one we were never told
# about (another tenant's, a provider's own) has no place in a log line.
_SCHEME = re.compile(r"\b([Bb]earer|[Bb]asic|Token)(\s+)[A-Za-z0-9._~+/-]{12,}=*")
# The shortest text _SCHEME can match ("Token", a space, 12 characters): a shorter one
# holds no credential after a scheme.
SHORTEST_SCHEMED = 18


def derived_forms(secret: str) -> list[str]:
    """The secret and its base64 forms (standard and URL-safe, padded or not)."""
    encoded = base64.b64encode(secret.encode()).decode()
    urlsafe = base64.urlsafe_b64encode(secret.encode()).decode()
    return list(dict.fromkeys([secret, encoded, encoded.rstrip("="), urlsafe, urlsafe.rstrip("=")]))


def basic_auth_forms(user: str, password: str) -> list[str]:
    """What an `Authorization: Basic` header holds for this pair."""
    return derived_forms(f"{user}:{password}")[1:]


def expand(secrets: Iterable[str]) -> list[str]:
    """Every form of every secret, longest first so that no shorter one masks a part
    of a longer one and leaves the rest readable."""
    forms = {form for secret in secrets if secret for form in derived_forms(secret)}
    return sorted(forms, key=len, reverse=True)


def mask(text: str, forms: Iterable[str]) -> str:
    """`text` with each of these forms (see `expand`) and any credential after an auth
    scheme replaced by REDACTED."""
    for form in forms:
        if form in text:
            text = text.replace(form, REDACTED)
    if "earer" in text or "asic" in text or "Token" in text:
        text = _SCHEME.sub(rf"\1\2{REDACTED}", text)
    return text
