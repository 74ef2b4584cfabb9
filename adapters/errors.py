"""The one exception the adapters package raises for anything a user (or a tenant's file) got wrong."""

from __future__ import annotations


class AdapterError(ValueError):
    """An adapter file, adapter set or backbone spec that cannot be used, with a message saying what to change.

    A `ValueError`, so the API layer can map it to a 4xx answer without knowing this package.
    """


def listing(items: list[str], n: int = 8) -> str:
    """The first `n` items, comma-separated, and how many more: for naming offending keys in a message."""
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")
