"""Chat2Desk's webhook signature: `X-Signature` is the lowercase hex HMAC-SHA256 of the
raw body followed directly by the `X-Timestamp` header's value, keyed with the MD5 of
the account's API token.

Chat2Desk's documentation shows the key as a placeholder (`md5_api_token`) and does not
say whether it means the 32-character hex string or the 16 raw bytes of the digest, so
both are accepted. It states no freshness window for the timestamp either (a retry two
hours later may carry the first one), so none is enforced: the token in the URL and the
signature together say who sent it; the worker's dedupe says whether it was seen.
"""

from __future__ import annotations

import hashlib
import hmac


def signature(body: bytes, timestamp: str, key: bytes) -> str:
    return hmac.new(key, body + timestamp.encode(), hashlib.sha256).hexdigest()


def is_valid(api_token: str, body: bytes, timestamp: str | None, given: str | None) -> bool:
    if not api_token or not timestamp or not given:
        return False
    digest = hashlib.md5(api_token.encode(), usedforsecurity=False)
    wanted = given.strip().lower().encode()
    return any(
        hmac.compare_digest(signature(body, timestamp, key).encode(), wanted)
        for key in (digest.hexdigest().encode(), digest.digest())
    )
