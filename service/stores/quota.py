"""Per-tenant adapter quotas, one rule for both stores (called inside their atomic section)."""

from __future__ import annotations

from collections.abc import Sequence

from service.stores.base import AdapterMeta, Quota, QuotaExceeded


def check_quota(others: Sequence[AdapterMeta], new: AdapterMeta, quota: Quota) -> None:
    """`others`: the tenant's adapters except the one being written (a replacement frees its old bytes)."""
    if len(others) + 1 > quota.max_count:
        raise QuotaExceeded(
            f"you have {len(others)} adapters and the limit is {quota.max_count}: delete one before uploading"
        )
    used = sum(m.size for m in others)
    if used + new.size > quota.max_bytes:
        raise QuotaExceeded(
            f"this upload ({new.size} bytes) would bring your adapters over the limit of {quota.max_bytes} bytes "
            f"(to {used + new.size}): delete adapters or upload a smaller file"
        )
