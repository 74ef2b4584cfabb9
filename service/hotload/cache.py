"""Parsed adapters, shared by every request of a replica: an LRU bounded in bytes.

An entry is keyed by (tenant, name, sha256 of the uploaded file) and is `loading` (one thread fetches and
parses; others asking for the same version wait for it), `ready`, or `errored` (a blob that stopped
parsing or validating, e.g. after a backbone change: later requests fail fast with the same message).
Because the key carries the version the request read from the store, a replaced adapter can never be
served stale; the store's change notifications (Redis pub/sub on every replica) drop old versions at
once so their memory is freed before the LRU would.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Literal

import torch

from adapters import Adapter, AdapterError, ExportLimits, LoRAAdapter, TextualInversion, load_adapter, validate
from adapters.errors import DiffplexError
from adapters.spec import BackboneSpec
from service.core.metrics import Metrics
from service.stores.base import AdapterMeta, Store

EntryState = Literal["loading", "ready", "errored"]
ERRORED_ENTRY_BYTES = 1024  # an errored entry holds only its message
RETRIES = 3  # reads of a version that was replaced meanwhile


class AdapterGone(DiffplexError, LookupError):
    """The adapter was deleted between the request reading its metadata and loading it."""

    status, code = 404, "not_found"


@dataclass
class _Entry:
    state: EntryState
    done: Future = field(default_factory=Future)
    adapter: Adapter | None = None
    error: Exception | None = None  # AdapterError (cached: the file is bad) or a store failure (not cached)
    nbytes: int = 0


def adapter_nbytes(adapter: Adapter) -> int:
    if isinstance(adapter, LoRAAdapter):
        tensors: list[torch.Tensor] = [t for layer in adapter.layers.values() for t in (layer.down, layer.up)]
    elif isinstance(adapter, TextualInversion):
        tensors = list(adapter.tokens.values())
    else:
        tensors = list(adapter.tokens)
    return sum(t.numel() * t.element_size() for t in tensors)


class AdapterCache:
    def __init__(
        self,
        store: Store,
        spec: BackboneSpec,
        limits: ExportLimits,
        max_bytes: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.spec = spec
        self.limits = limits
        self.max_bytes = max_bytes
        self.metrics = metrics or Metrics()
        self._entries: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self._unsubscribe = store.subscribe(self.invalidate)

    def close(self) -> None:
        self._unsubscribe()

    def state(self, tenant: str, name: str, sha256: str) -> EntryState | None:
        with self._lock:
            entry = self._entries.get((tenant, name, sha256))
            return None if entry is None else entry.state

    def get(self, tenant: str, meta: AdapterMeta) -> Adapter:
        """The parsed adapter of this version (loading it on a miss); AdapterError when it does not load,
        AdapterGone when it was deleted meanwhile. A version replaced meanwhile loads the new one."""
        for _ in range(RETRIES):
            key = (tenant, meta.name, meta.sha256)
            with self._lock:
                entry = self._entries.get(key)
                if entry is None:
                    entry = self._entries[key] = _Entry("loading")
                    owner = True
                    self.metrics.cache_misses.inc()
                else:
                    owner = False
                    self._entries.move_to_end(key)
                    if entry.state != "loading":
                        self.metrics.cache_hits.inc()
            if owner:
                self._load(key, entry, meta)
            entry.done.result()  # wait for the loading thread (never raises: outcomes live on the entry)
            if entry.state == "ready":
                return entry.adapter  # type: ignore[return-value]
            if entry.error is not None:
                raise entry.error
            fresh = self.store.get_adapter(tenant, meta.name)  # replaced or deleted while loading
            if fresh is None:
                raise AdapterGone(f"adapter {meta.name!r} was deleted")
            meta = fresh
        raise AdapterError(f"adapter {meta.name!r} keeps changing while it loads: retry")

    def _load(self, key: tuple[str, str, str], entry: _Entry, meta: AdapterMeta) -> None:
        tenant = key[0]
        try:
            blob = self.store.adapter_blob(tenant, meta.name, meta.sha256)
            if blob is None:
                with self._lock:
                    self._entries.pop(key, None)
                entry.state = "errored"  # no error set: the caller re-reads the metadata
                self.metrics.cache_loads.labels("gone").inc()
                return
            adapter = load_adapter(blob, token=meta.token_override)
            validate(adapter, self.spec, self.limits)
        except AdapterError as error:
            self._settle(key, entry, "errored", error=error, nbytes=ERRORED_ENTRY_BYTES)
            self.metrics.cache_loads.labels("errored").inc()
        except Exception as error:  # noqa: BLE001 - a store outage must not leave waiters hanging
            with self._lock:
                self._entries.pop(key, None)
            entry.state, entry.error = "errored", error  # not cached: the next request tries again
            self.metrics.cache_loads.labels("failed").inc()
        else:
            self._settle(key, entry, "ready", adapter=adapter, nbytes=adapter_nbytes(adapter))
            self.metrics.cache_loads.labels("ready").inc()
        finally:
            entry.done.set_result(None)

    def _settle(
        self,
        key: tuple[str, str, str],
        entry: _Entry,
        state: EntryState,
        adapter: Adapter | None = None,
        error: AdapterError | None = None,
        nbytes: int = 0,
    ) -> None:
        with self._lock:
            entry.state, entry.adapter, entry.error, entry.nbytes = state, adapter, error, nbytes
            if self._entries.get(key) is entry:  # not invalidated while loading
                self.bytes += nbytes
                self._evict_over_budget(keep=key)
            self.metrics.cache_bytes.set(self.bytes)

    def _evict_over_budget(self, keep: tuple[str, str, str]) -> None:
        for key in list(self._entries):
            if self.bytes <= self.max_bytes:
                break
            entry = self._entries[key]
            if key == keep or entry.state == "loading":
                continue
            self._drop(key, "size")

    def _drop(self, key: tuple[str, str, str], reason: str) -> None:
        entry = self._entries.pop(key)
        if entry.state != "loading":
            self.bytes -= entry.nbytes
        self.metrics.cache_evictions.labels(reason).inc()

    def invalidate(self, tenant: str, name: str) -> None:
        """Drop every cached version of (tenant, name): the adapter was replaced or deleted."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == tenant and k[1] == name]:
                self._drop(key, "changed")
            self.metrics.cache_bytes.set(self.bytes)
