"""A request's state in the engine: what it costs a tick and its tenant's cap, and its handle's cancel."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from service.engine.job import ActiveRequest, Job
from service.engine.request import GenerationRequest


def entry(**options: object) -> ActiveRequest:
    request = GenerationRequest("a red circle", seed=0, tenant="t", **options)
    return ActiveRequest(request, Future(), None, 0.0, threading.Event())


def test_a_guided_request_costs_two_rows_and_an_unguided_one() -> None:
    assert entry(guidance_scale=5.0).unet_rows == 2
    assert entry(guidance_scale=1.0).unet_rows == 1
    assert entry(steps=7).work == 7 and entry().tenant == "t"


def test_done_after_its_last_timestep() -> None:
    active = entry()
    active.timesteps = [999, 499]
    active.step = 1
    assert not active.done
    active.step = 2
    assert active.done


def test_cancel_marks_the_request_for_the_engine() -> None:
    active = entry()
    job = Job(active)
    assert job.request_id == active.request.request_id and job.future is active.future
    job.cancel()
    assert active.cancelled.is_set()
