"""Fair admission in the engine: per-tenant queues served by weighted fair sharing, weighted rows per tick,
and the per-tenant work cap (TenantBusy) that leaves the other tenants admitted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from service.core.settings import EngineSettings, FairnessSettings
from service.engine import Engine, GenerationRequest, Job, QueueFull, TenantBusy
from service.runtime.base import Runtime

PROMPT = "a red circle on a blue background"


def request(tenant: str, steps: int, seed: int = 0) -> GenerationRequest:
    # Unguided: one U-Net row per step, so the row arithmetic below is exact.
    return GenerationRequest(PROMPT, seed=seed, steps=steps, guidance_scale=1.0, tenant=tenant)


def finish_order(jobs: dict[str, Job]) -> list[str]:
    order: list[str] = []
    for name, job in jobs.items():
        job.future.add_done_callback(lambda _, name=name: order.append(name))
    return order


def test_a_flooding_tenant_s_backlog_does_not_delay_another_tenant(torch_runtime: Runtime) -> None:
    engine = Engine(torch_runtime, EngineSettings(max_active=2))
    jobs = {f"flood-{i}": engine.submit(request("flood", steps=4, seed=i)) for i in range(10)}
    engine.tick()  # the flood's first two requests are admitted and running
    jobs["small"] = engine.submit(request("small", steps=2))
    order = finish_order(jobs)
    engine.run_until_idle()
    # The small request waits for the work already admitted (two requests), then takes the first free slot:
    # with one global FIFO it finished last, behind all ten.
    assert order[:3] == ["flood-0", "flood-1", "small"]
    assert jobs["small"].result(timeout=0).image.shape == (16, 16, 3)
    assert len(order) == 11 and engine.load == 0


def test_admission_follows_the_weights(torch_runtime: Runtime) -> None:
    engine = Engine(torch_runtime, EngineSettings(max_active=1), FairnessSettings(weights={"gold": 2.0}))
    jobs = {f"{t}-{i}": engine.submit(request(t, steps=1, seed=i)) for t in ("gold", "free") for i in range(6)}
    order = finish_order(jobs)
    engine.run_until_idle()
    assert Counter(name.split("-")[0] for name in order[:6]) == Counter({"gold": 4, "free": 2})


def test_rows_per_tick_follow_the_weights(torch_runtime: Runtime) -> None:
    engine = Engine(torch_runtime, EngineSettings(max_rows=4), FairnessSettings(weights={"gold": 3.0}))
    steps: Counter[str] = Counter()

    def counter(tenant: str) -> Callable[[int, int], None]:
        return lambda done, total: steps.update([tenant])

    for i in range(4):
        for tenant in ("gold", "free"):
            engine.submit(request(tenant, steps=3, seed=i), progress=counter(tenant))
    engine.tick()
    assert steps == Counter({"gold": 3, "free": 1})  # 4 rows: weight 3 to 1
    engine.run_until_idle()
    assert engine.load == 0


def test_equal_weights_keep_plain_round_robin(torch_runtime: Runtime) -> None:
    engine = Engine(torch_runtime, EngineSettings(max_rows=4))
    steps: Counter[str] = Counter()
    for i in range(4):
        for tenant in ("a", "b"):
            engine.submit(request(tenant, steps=3, seed=i), progress=lambda d, t, tenant=tenant: steps.update([tenant]))
    engine.tick()
    assert steps == Counter({"a": 2, "b": 2})
    engine.run_until_idle()


def test_over_its_cap_a_tenant_is_refused_and_others_are_still_admitted(torch_runtime: Runtime) -> None:
    engine = Engine(torch_runtime, fairness=FairnessSettings(max_tenant_work=10))
    held = [engine.submit(request("busy", steps=4, seed=i)) for i in range(2)]  # 8 of its 10 image-steps
    with pytest.raises(TenantBusy, match="limit is 10") as refused:
        engine.submit(request("busy", steps=4))
    assert refused.value.retry_after_s >= 1.0
    assert "fewer" in str(refused.value)  # says what to do
    # A multi-image request is checked whole (2 x 2 = 4 more: 12 > 10), and refused before any image is queued.
    with pytest.raises(TenantBusy):
        engine.submit_all([request("busy", steps=2), request("busy", steps=2)])
    assert engine.load == 2
    other = engine.submit(request("other", steps=4))  # another tenant is admitted meanwhile
    engine.run_until_idle()
    assert all(j.result(timeout=0).image.shape == (16, 16, 3) for j in [*held, other])
    # Its work done, the tenant fits again; a request over the cap alone runs when it holds nothing else.
    big = engine.submit(request("busy", steps=30))
    with pytest.raises(TenantBusy):
        engine.submit(request("busy", steps=1))
    engine.run_until_idle()
    assert big.result(timeout=0).image.shape == (16, 16, 3)


def test_the_cap_scales_with_weight_and_skips_accepted_work(torch_runtime: Runtime) -> None:
    engine = Engine(torch_runtime, fairness=FairnessSettings(max_tenant_work=10, weights={"gold": 2.0}))
    for i in range(5):
        engine.submit(request("gold", steps=4, seed=i))  # 20 = 10 x 2
    with pytest.raises(TenantBusy, match="limit is 20"):
        engine.submit(request("gold", steps=1))
    engine.submit(request("gold", steps=1), capped=False)  # a stored job re-run: waits instead of failing
    assert engine.load == 6
    engine.run_until_idle()
    assert engine.load == 0


def test_cancelled_queued_work_no_longer_counts(torch_runtime: Runtime) -> None:
    engine = Engine(torch_runtime, EngineSettings(max_active=1), FairnessSettings(max_tenant_work=10))
    first = engine.submit(request("t", steps=5))
    second = engine.submit(request("t", steps=5))
    with pytest.raises(TenantBusy):
        engine.submit(request("t", steps=5))
    engine.tick()  # "first" running, "second" queued
    second.cancel()
    engine.tick()  # drops it
    engine.submit(request("t", steps=5))
    engine.run_until_idle()
    assert first.result(timeout=0) is not None and engine.load == 0


def test_retry_after_follows_the_measured_throughput(torch_runtime: Runtime) -> None:
    engine = Engine(torch_runtime, EngineSettings(max_rows=4), FairnessSettings(max_tenant_work=40))
    for i in range(10):  # 40 image-steps: the cap
        engine.submit(request("t", steps=4, seed=i))
    for _ in range(4):
        engine.tick()
    rate = engine.work_per_s
    assert rate is not None and rate > 0
    with pytest.raises(TenantBusy) as refused:
        engine.submit(request("t", steps=40))  # over the cap alone: everything it holds must finish first
    held = 40 - 4 * 4
    assert refused.value.retry_after_s == pytest.approx(max(1.0, held / rate), rel=0.01)
    engine.run_until_idle()


def test_the_global_queue_bound_applies_to_a_whole_batch(torch_runtime: Runtime) -> None:
    engine = Engine(torch_runtime, EngineSettings(max_queue=3))
    engine.submit(request("a", steps=1))
    with pytest.raises(QueueFull):
        engine.submit_all([request("b", steps=1) for _ in range(3)])
    assert engine.load == 1
    engine.run_until_idle()
