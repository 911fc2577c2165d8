"""The web chat's cookie: only its secret signs it, and only for its tenant."""

from __future__ import annotations

from server.webchat_cookie import new_session, sign, verify

SECRET = "a-secret-of-twenty-chars"


def test_a_signed_session_verifies_for_its_tenant() -> None:
    session = new_session()
    assert verify(SECRET, "shop", sign(SECRET, "shop", session)) == session


def test_a_cookie_of_one_tenant_names_nobody_at_another() -> None:
    assert verify(SECRET, "other-shop", sign(SECRET, "shop", new_session())) is None


def test_a_cookie_signed_with_another_secret_is_refused() -> None:
    assert verify(SECRET, "shop", sign("some-other-secret-value", "shop", new_session())) is None


def test_a_tampered_session_id_is_refused() -> None:
    value = sign(SECRET, "shop", new_session())
    tampered = ("B" if value[0] != "B" else "C") + value[1:]
    assert verify(SECRET, "shop", tampered) is None


def test_garbage_is_refused() -> None:
    for value in ("", ".", "abc", "a" * 22 + ".", "é" * 22 + "." + "x" * 32):
        assert verify(SECRET, "shop", value) is None
