"""Weighted fair admission: one queue per tenant, served by virtual time, and a cap on each tenant's work.

Work is counted in images x steps (one image of one request denoised for one step), the unit the engine
spends its U-Net rows on. Each tenant has a virtual finish time: where the work admitted for it so far ends
if it is served at `weight` units per unit of virtual time. Admission serves the backlogged tenant whose next
request would finish first in virtual time (start-time fair queuing with finish-tag selection), so during
any busy period the work admitted per tenant follows the weights, however many requests one tenant queues:
its backlog delays only itself.

A tenant that was idle does not bank credit: when its queue refills, its finish time is raised to the
current virtual time (the start of the latest admitted request), so it competes from now on, not from when
it last sent something.

The cap bounds what one tenant holds in the engine (queued and running) at `max_work x weight`. A request
that would exceed it is refused (the engine raises TenantBusy) while other tenants are admitted as before.
One rule keeps the cap from refusing forever: a tenant with nothing outstanding is always admitted, even
with a request whose work alone is over its cap.

Not thread-safe: the engine calls it under its own lock.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Tenant(Generic[T]):
    weight: float
    queue: deque[tuple[int, T, int]] = field(default_factory=deque)  # (arrival number, item, work)
    finish: float = 0.0  # virtual time at which the work admitted so far ends
    outstanding: int = 0  # work pushed and not yet released (queued + running)


class FairQueue(Generic[T]):
    def __init__(self, weights: Mapping[str, float] | None = None, max_work: int | None = None) -> None:
        weights = dict(weights or {})
        for name, weight in weights.items():
            if not weight > 0:  # a zero weight would never be served: refuse the configuration instead
                raise ValueError(f"the fairness weight of tenant {name!r} must be positive, not {weight}")
        if max_work is not None and max_work < 1:
            raise ValueError(f"the per-tenant work cap must be at least 1 image-step, not {max_work}")
        self._weights = weights
        self.max_work = max_work
        self._tenants: dict[str, _Tenant[T]] = {}
        self._virtual = 0.0  # start of the latest admitted request, in virtual time
        self._arrivals = itertools.count()  # ties go to the earlier arrival: FIFO among equals
        self._queued = 0

    # -- what a tenant may hold ------------------------------------------------------------------------------
    def weight(self, tenant: str) -> float:
        return self._weights.get(tenant, 1.0)

    def cap(self, tenant: str) -> float | None:
        """Work the tenant may hold, queued and running; None: no cap."""
        return None if self.max_work is None else self.max_work * self.weight(tenant)

    def outstanding(self, tenant: str) -> int:
        state = self._tenants.get(tenant)
        return 0 if state is None else state.outstanding

    def fits(self, tenant: str, work: int) -> bool:
        """Whether `work` more (a whole multi-image request) stays under the tenant's cap. A tenant holding
        nothing always fits: a request larger than the cap runs alone rather than never."""
        cap = self.cap(tenant)
        held = self.outstanding(tenant)
        return cap is None or held == 0 or held + work <= cap

    def retry_after_s(self, tenant: str, work: int, work_per_s: float) -> float:
        """How long until `work` more fits, at `work_per_s` (the engine's recent throughput): the tenant's work
        that must finish first, plus what the other tenants holding work get done meanwhile (their weighted
        share of it, but no more than they hold: a tenant with one small request left does not halve ours)."""
        cap = self.cap(tenant)
        held = self.outstanding(tenant)
        must_finish = max(0, held if cap is None or work > cap else held + work - cap)
        per_unit = must_finish / self.weight(tenant)  # virtual time our work needs
        others = sum(
            min(state.outstanding, per_unit * state.weight) for name, state in self._tenants.items() if name != tenant
        )
        return (must_finish + others) / work_per_s

    # -- queueing --------------------------------------------------------------------------------------------
    def push(self, tenant: str, item: T, work: int) -> None:
        """Queue `item` and hold its work against the tenant's cap until `release` (check `fits` first)."""
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = _Tenant(self.weight(tenant))
        if not state.queue:
            state.finish = max(state.finish, self._virtual)  # idle until now: no credit banked
        state.queue.append((next(self._arrivals), item, work))
        state.outstanding += work
        self._queued += 1

    def peek(self) -> T | None:
        """The item `pop` would return next, left queued."""
        state = self._next()
        return None if state is None else state.queue[0][1]

    def pop(self) -> T | None:
        """The next item to admit: the head of the backlogged tenant with the least virtual finish."""
        state = self._next()
        if state is None:
            return None
        _, item, work = state.queue.popleft()
        start = state.finish
        state.finish = start + work / state.weight
        self._virtual = max(self._virtual, start)
        self._queued -= 1
        return item

    def release(self, tenant: str, work: int) -> None:
        """The item's work left the engine (finished, failed or cancelled): it no longer counts to the cap."""
        state = self._tenants.get(tenant)
        if state is None:
            return
        state.outstanding = max(0, state.outstanding - work)
        self._forget_idle()

    def discard(self, gone: Callable[[T], bool]) -> list[T]:
        """Remove the queued items `gone` selects (cancelled); their work is held until `release`."""
        removed: list[T] = []
        for state in self._tenants.values():
            kept = deque(entry for entry in state.queue if not gone(entry[1]))
            removed += [entry[1] for entry in state.queue if gone(entry[1])]
            state.queue = kept
        self._queued -= len(removed)
        return removed

    def __len__(self) -> int:
        return self._queued

    def __iter__(self) -> Iterator[T]:
        """Queued items, tenant by tenant."""
        for state in self._tenants.values():
            yield from (item for _, item, _ in state.queue)

    def _next(self) -> _Tenant[T] | None:
        backlogged = [state for state in self._tenants.values() if state.queue]
        if not backlogged:
            return None
        return min(backlogged, key=lambda s: (s.finish + s.queue[0][2] / s.weight, s.queue[0][0]))

    def _forget_idle(self) -> None:
        """Drop tenants whose state equals a new tenant's (nothing held, no credit ahead of virtual time), so
        the table holds the active tenants, not every tenant ever seen."""
        idle = [
            name
            for name, state in self._tenants.items()
            if not state.queue and state.outstanding == 0 and state.finish <= self._virtual
        ]
        for name in idle:
            del self._tenants[name]
