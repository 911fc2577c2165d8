"""Tenant credentials encrypted at rest, with keys from ORDERBOT_MASTER_KEY.

A database dump, a replica or a backup must not hand out every business's API
tokens: the `tenants` table holds only Fernet tokens (AES-128-CBC + HMAC-SHA256),
and the key lives in the environment of the processes. The setting is a comma
list so keys can be rotated without downtime: the first key encrypts, every key
decrypts; prepend a new key, restart, run `orderbot tenants reencrypt`, then drop
the old key.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class MasterKeyError(ValueError):
    """The master key is malformed; one line for an operator, naming no part of the key."""


class UnreadableSecret(Exception):
    """A stored secret was not encrypted with any of the configured keys (or was altered)."""


def parse_keys(value: str) -> list[Fernet]:
    """Every key of a comma list, first the one that encrypts."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise MasterKeyError("no key given")
    keys: list[Fernet] = []
    for position, item in enumerate(items, start=1):
        try:
            keys.append(Fernet(item.encode()))
        except ValueError:
            # Never echo the value: it is (a typo of) a secret.
            raise MasterKeyError(
                f"key {position} is not a Fernet key "
                "(32 url-safe base64-encoded bytes; `orderbot tenants new-key` makes one)"
            ) from None
    return keys


def new_key() -> str:
    return Fernet.generate_key().decode()


class SecretBox:
    """Encrypts with the first key, decrypts with any."""

    def __init__(self, master_key: str) -> None:
        self._fernet = MultiFernet(parse_keys(master_key))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, UnicodeDecodeError):
            raise UnreadableSecret("not readable with ORDERBOT_MASTER_KEY") from None

    def rotate(self, token: str) -> str:
        """The same secret encrypted with the first key (for `tenants reencrypt`)."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise UnreadableSecret("not readable with ORDERBOT_MASTER_KEY") from None
