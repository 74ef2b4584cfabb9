"""Row picking without a model: shapes take turns, tenants take weighted turns, and the row budget holds."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from service.engine.scheduler import pick_rows, pick_shape, quanta, rotate, weighted_round_robin

SMALL, LARGE = (1, 4, 2, 2), (1, 4, 4, 4)


@dataclass(frozen=True)
class Row:
    name: str
    tenant: str = "t"
    shape: tuple[int, ...] = SMALL
    unet_rows: int = 1


def equal(_: str) -> float:
    return 1.0


def names(rows: list[Row]) -> list[str]:
    return [r.name for r in rows]


def test_shapes_take_turns_in_a_fixed_order() -> None:
    assert [pick_shape([LARGE, SMALL, LARGE], turn) for turn in range(3)] == [SMALL, LARGE, SMALL]
    active = [Row("a", shape=LARGE), Row("b", shape=SMALL), Row("c", shape=LARGE)]
    assert names(pick_rows(active, 16, equal, turn=0)) == ["b"]  # one shape per call
    assert names(pick_rows(active, 16, equal, turn=1)) == ["a", "c"]


def test_tenants_alternate_and_each_keeps_its_arrival_order() -> None:
    active = [Row(f"hog{i}", "hog") for i in range(4)] + [Row("small", "small")]
    assert names(pick_rows(active, 3, equal, turn=0)) == ["hog0", "small", "hog1"]
    assert names(pick_rows(active, 3, equal, turn=1)) == ["small", "hog0", "hog1"]  # the next tick starts later


def test_a_heavier_tenant_takes_more_requests_a_round() -> None:
    active = [Row(f"gold{i}", "gold") for i in range(6)] + [Row(f"free{i}", "free") for i in range(6)]
    weight = {"gold": 3.0, "free": 1.0}.__getitem__
    picked = pick_rows(active, 8, weight, turn=0)
    assert Counter(r.tenant for r in picked) == {"gold": 6, "free": 2}
    assert quanta({"a": 1.0, "b": 2.0, "c": 2.6}) == {"a": 1, "b": 2, "c": 3}
    assert quanta({"a": 0.5, "b": 0.5}) == {"a": 1, "b": 1}


def test_guided_rows_cost_two_and_the_budget_is_never_exceeded() -> None:
    active = [Row("g1", "a", unet_rows=2), Row("u1", "b"), Row("g2", "a", unet_rows=2), Row("u2", "b")]
    picked = pick_rows(active, 4, equal, turn=0)
    assert names(picked) == ["g1", "u1"]  # g2 would make 5 rows: it waits, first in line, for the next tick
    assert sum(r.unet_rows for r in picked) <= 4


def test_a_pick_is_never_empty() -> None:
    assert names(pick_rows([Row("g", unet_rows=2)], 1, equal, turn=0)) == ["g"]
    assert pick_rows([], 4, equal, turn=0) == []


def test_round_robin_stops_when_the_queues_run_dry() -> None:
    queues = {"a": deque([Row("a0", "a")]), "b": deque([Row("b0", "b"), Row("b1", "b")])}
    assert names(weighted_round_robin(queues, ["a", "b"], {"a": 1, "b": 1}, 10)) == ["a0", "b0", "b1"]
    assert rotate(["a", "b", "c"], 4) == ["b", "c", "a"]
