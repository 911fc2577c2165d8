"""The console's session cookie: signed, expiring, and safe to rotate the secret of."""

from __future__ import annotations

import base64

from server.console.session import ConsoleSession, seal, unseal

OLD = "old-console-secret-0123456789abcdef"
NEW = "new-console-secret-fedcba9876543210"


def session(ttl: float = 60) -> ConsoleSession:
    return ConsoleSession.start(
        tenant="north", name="operator", api_key="ops-key-0123456789", ttl=ttl
    )


def test_a_sealed_session_opens_with_its_secret() -> None:
    made = session()

    assert unseal(seal(made, [OLD]), [OLD]) == made


def test_while_rotating_a_cookie_of_the_old_secret_still_opens_and_new_ones_use_the_new() -> None:
    before = seal(session(), [OLD])
    after = seal(session(), [NEW, OLD])

    assert unseal(before, [NEW, OLD]) is not None
    assert unseal(after, [NEW]) is not None  # signed with the first
    assert unseal(after, [OLD]) is None


def test_once_the_old_secret_is_dropped_its_cookies_open_nothing() -> None:
    assert unseal(seal(session(), [OLD]), [NEW]) is None


def test_an_expired_session_opens_nothing() -> None:
    assert unseal(seal(session(ttl=-1), [OLD]), [OLD]) is None


def test_the_cookie_names_the_key_without_holding_it() -> None:
    cookie = seal(session(), [OLD])
    payload = cookie.split(".")[0]

    assert b"ops-key-0123456789" not in base64.urlsafe_b64decode(
        payload + "=" * (-len(payload) % 4)
    )
    assert unseal(cookie.replace(".", "x", 1), [OLD]) is None
    for garbage in ("", ".", "a.b", "%%%.%%%", "x" * 5000):
        assert unseal(garbage, [OLD]) is None
