"""Row picking: which active requests share this tick's U-Net calls. Pure: the same rows, budget, weights and
turn give the same pick, so fairness is tested without running a model.

A tick runs one latent shape (a U-Net call takes one), chosen round-robin over the shapes present, so a size
few requests ask for is not starved by a popular one. Within it, tenants take turns (weighted round-robin,
starting one tenant later each tick): a tenant with 100 requests does not starve one with 1, and a tenant of
weight 2 gets two requests a round where one of weight 1 gets one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar


class Schedulable(Protocol):
    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def tenant(self) -> str: ...

    @property
    def unet_rows(self) -> int: ...  # rows it takes of a call (a guided request: 2)


R = TypeVar("R", bound=Schedulable)
T = TypeVar("T")


def pick_rows(active: Sequence[R], max_rows: int, weight: Callable[[str], float], turn: int) -> list[R]:
    """This tick's rows: the shape whose turn it is, then per-tenant weighted round-robin up to `max_rows`
    U-Net rows. `turn` counts the ticks; `active` is in arrival order, which each tenant's requests keep."""
    if not active:
        return []
    shape = pick_shape((r.shape for r in active), turn)
    by_tenant: dict[str, deque[R]] = {}
    for row in active:
        if row.shape == shape:
            by_tenant.setdefault(row.tenant, deque()).append(row)
    order = rotate(list(by_tenant), turn)
    return weighted_round_robin(by_tenant, order, quanta({t: weight(t) for t in order}), max_rows)


def pick_shape(shapes: Iterable[tuple[int, ...]], turn: int) -> tuple[int, ...]:
    """Round-robin over the distinct shapes, in a fixed (sorted) order."""
    distinct = sorted(set(shapes))
    return distinct[turn % len(distinct)]


def rotate(items: list[T], turn: int) -> list[T]:
    """`items` starting at position `turn` (modulo), so no one always goes first."""
    offset = turn % len(items)
    return items[offset:] + items[:offset]


def quanta(weights: Mapping[str, float]) -> dict[str, int]:
    """Requests per round for each tenant: its weight as a multiple of the lightest present (at least 1), so
    equal weights give one each, plain round-robin."""
    lightest = min(weights.values())
    return {tenant: max(1, round(w / lightest)) for tenant, w in weights.items()}


def weighted_round_robin(
    queues: Mapping[str, deque[R]], order: Sequence[str], quantum: Mapping[str, int], max_rows: int
) -> list[R]:
    """Rounds over `order`, each tenant taking up to its quantum from the head of its queue, until the rows
    are spent or the queues empty. A head that does not fit ends the pick (it stays first for the next tick),
    except that a pick never comes back empty: `max_rows` 1 with a guided request still makes progress.
    Consumes `queues`."""
    picked: list[R] = []
    budget = max_rows
    while budget > 0 and any(queues[t] for t in order):
        for tenant in order:
            queue = queues[tenant]
            for _ in range(min(quantum[tenant], len(queue))):
                if queue[0].unet_rows > budget:
                    if not picked:
                        picked.append(queue.popleft())
                    return picked
                budget -= queue[0].unet_rows
                picked.append(queue.popleft())
    return picked
