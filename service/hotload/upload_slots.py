"""How many uploads (adapter files, edit images) each tenant has in flight in this process.

A 64 MiB upload holds its bytes in memory or in a temporary file while it arrives and is parsed, so a tenant
sending many at once could fill either; a few at a time is all one client needs. Per process, not shared
through the store: the memory it protects is this process's. Touched from the event loop only, so no lock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from service.core.errors import retry_later

BUSY_RETRY_S = 2  # an upload of a few MiB finishes in about that much time on a fair link


class UploadSlots:
    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self._held: Counter[str] = Counter()

    def held(self, tenant: str) -> int:
        return self._held[tenant]

    def take(self, tenant: str) -> Callable[[], None]:
        """A slot for one upload of `tenant`, or 429 when it has `per_tenant` in flight. Returns the function
        that gives the slot back (safe to call twice: once when the body is in, once when the request ends)."""
        if self.per_tenant > 0 and self._held[tenant] >= self.per_tenant:
            message = f"you already have {self.per_tenant} uploads in progress: wait for one to finish"
            raise retry_later(429, message, "too_many_uploads", BUSY_RETRY_S)
        self._held[tenant] += 1
        given_back = False

        def release() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                self._held[tenant] -= 1
                if self._held[tenant] <= 0:
                    del self._held[tenant]  # no entry left behind per tenant ever seen

        return release
