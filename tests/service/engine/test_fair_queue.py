"""The fair admission policy on its own: shares follow the weights, a backlog delays only its tenant, idle
tenants bank no credit, and the per-tenant cap (which never refuses a tenant holding nothing)."""

from __future__ import annotations

from collections import Counter

import pytest

from service.engine.fair_queue import FairQueue


def drain(queue: FairQueue[str], count: int | None = None) -> list[str]:
    out = []
    while len(queue) and (count is None or len(out) < count):
        item = queue.pop()
        assert item is not None
        out.append(item)
    return out


def test_backlogged_tenants_get_work_in_proportion_to_their_weights() -> None:
    queue: FairQueue[str] = FairQueue({"gold": 3.0})
    for i in range(300):
        queue.push("gold", f"gold-{i}", 10)
        queue.push("free", f"free-{i}", 10)
    served = Counter(item.split("-")[0] for item in drain(queue, 200))
    assert served == Counter({"gold": 150, "free": 50})


def test_shares_are_in_work_not_requests() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(100):
        queue.push("big", f"big-{i}", 100)  # n=1 x 100 steps
    for i in range(1000):
        queue.push("small", f"small-{i}", 10)
    first = drain(queue, 110)
    work = Counter()
    for item in first:
        work[item.split("-")[0]] += 100 if item.startswith("big") else 10
    assert abs(work["big"] - work["small"]) <= 100  # equal weights: equal work, to within one request


def test_a_flooding_backlog_does_not_delay_a_newcomer() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(500):
        queue.push("flood", f"flood-{i}", 800)
    drain(queue, 3)  # the engine admitted some of the flood
    queue.push("small", "small", 4)
    assert queue.pop() == "small"  # next, not after the 497 queued before it


def test_an_idle_tenant_does_not_bank_credit() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(50):  # "busy" is served alone for a long time while "idle" sends nothing
        queue.push("busy", f"busy-{i}", 10)
    drain(queue, 40)
    for i in range(20):
        queue.push("idle", f"idle-{i}", 10)
    # Had "idle" kept its zero virtual time, it would now get the next 20 admissions; it alternates instead.
    assert Counter(item.split("-")[0] for item in drain(queue, 10)) == Counter({"busy": 5, "idle": 5})


def test_a_tenant_that_just_ran_does_not_jump_the_queue_by_going_idle() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("a", "a-0", 100)
    queue.push("b", "b-0", 10)
    assert drain(queue) == ["b-0", "a-0"]
    queue.push("b", "b-1", 10)  # "a" is 90 units ahead of "b": "b" goes first although "a" ran last
    queue.push("a", "a-1", 10)
    assert drain(queue) == ["b-1", "a-1"]


def test_equal_work_is_first_come_first_served() -> None:
    queue: FairQueue[str] = FairQueue()
    for name in ("c", "a", "b"):
        queue.push(name, name, 5)
    assert drain(queue) == ["c", "a", "b"]


def test_cap_scales_with_weight_and_counts_until_released() -> None:
    queue: FairQueue[str] = FairQueue({"gold": 2.0}, max_work=100)
    assert (queue.cap("gold"), queue.cap("other")) == (200.0, 100.0)
    queue.push("other", "o-0", 60)
    assert queue.fits("other", 40) and not queue.fits("other", 41)
    assert queue.fits("gold", 100)  # another tenant's work does not count
    assert queue.pop() == "o-0"
    assert not queue.fits("other", 41)  # running work still counts
    queue.release("other", 60)
    assert queue.fits("other", 100)


def test_a_request_over_the_cap_fits_when_the_tenant_holds_nothing() -> None:
    queue: FairQueue[str] = FairQueue(max_work=100)
    assert queue.fits("t", 800)  # n=8 x 100 steps with nothing else outstanding: run it alone, never refuse forever
    queue.push("t", "big", 800)
    assert not queue.fits("t", 1)
    queue.release("t", 800)
    assert queue.fits("t", 800)


def test_retry_after_is_the_work_to_finish_with_the_others_shares() -> None:
    queue: FairQueue[str] = FairQueue({"b": 3.0}, max_work=100)
    queue.push("a", "a", 100)
    assert queue.retry_after_s("a", 50, work_per_s=10.0) == pytest.approx(5.0)  # alone: 50 must finish at 10/s
    queue.push("b", "b", 1000)
    assert queue.retry_after_s("a", 50, work_per_s=10.0) == pytest.approx(20.0)  # "b" gets 3/4 of the engine
    assert queue.retry_after_s("a", 500, work_per_s=10.0) == pytest.approx(40.0)  # over the cap: all must finish
    queue.push("c", "c", 10)  # "c" would take half of what "a" gets, but holds only 10
    assert queue.retry_after_s("a", 50, work_per_s=10.0) == pytest.approx(21.0)


def test_discard_removes_queued_items_and_forgotten_tenants_leave_no_state() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(4):
        queue.push("t", f"t-{i}", 5)
    assert queue.discard(lambda item: item in ("t-1", "t-3")) == ["t-1", "t-3"]
    assert list(queue) == ["t-0", "t-2"] and len(queue) == 2
    queue.push("u", "u-0", 5)
    drain(queue)
    queue.release("t", 20)
    queue.release("u", 5)
    assert queue.outstanding("t") == 0
    assert set(queue._tenants) == {"t"}  # "u" is back to a new tenant's state; "t" is still ahead of virtual time


def test_non_positive_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        FairQueue({"t": 0.0})
