"""How a provider's list API failed: the reconciler backs off, for Retry-After if given."""

from __future__ import annotations


class ListUnavailable(Exception):
    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.status = status
        self.retry_after = retry_after

    @property
    def throttled(self) -> bool:
        return self.status == 429
