"""A failure in one request's admission, U-Net call or decode fails that request only: the other tenants'
requests that shared its batch still finish, with the images they would have had alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.core.settings import EngineSettings
from service.engine import Engine, EngineError, GenerationRequest
from service.runtime.base import Runtime
from tests.service.engine.helpers import generate, max_pixel_diff

POISON = 13.0  # the guidance scale that makes the faulty runtime's U-Net call fail


class FaultyRuntime:
    """Fault injection around the real runtime: a fused-CFG call holding a row guided at POISON raises,
    as a broken graph or an out-of-memory error would."""

    def __init__(self, inner: Runtime) -> None:
        self._inner = inner
        self.failed_calls = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def unet_cfg(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        guidance: torch.Tensor,
        *rest: object,
        **options: object,
    ) -> torch.Tensor:
        if bool((guidance == POISON).any()):
            self.failed_calls += 1
            raise RuntimeError("injected U-Net fault")
        return self._inner.unet_cfg(sample, timestep, cond, uncond, guidance, *rest, **options)


def _requests() -> list[GenerationRequest]:
    return [GenerationRequest(f"a {c} circle", seed=i, steps=3, tenant=f"t{i}") for i, c in enumerate(("red", "blue"))]


def test_a_failing_unet_row_fails_alone(torch_runtime: Runtime) -> None:
    expected = [generate(Engine(torch_runtime), r)[0] for r in _requests()]
    faulty = FaultyRuntime(torch_runtime)
    engine = Engine(faulty, EngineSettings(max_rows=32))  # type: ignore[arg-type]
    good = _requests()
    bad = GenerationRequest("a green square", seed=5, steps=3, guidance_scale=POISON, tenant="mallory")
    jobs = [engine.submit(r) for r in (good[0], bad, good[1])]
    engine.run_until_idle()
    with pytest.raises(RuntimeError, match="injected"):
        jobs[1].result(timeout=0)
    for job, want in zip((jobs[0], jobs[2]), expected, strict=True):
        assert max_pixel_diff(job.result(timeout=0).image, want) <= 1
    assert faulty.failed_calls == 2  # the shared call, then the culprit alone; never again after it failed
    assert engine.load == 0


def test_a_request_failing_admission_does_not_fail_its_batchmates(torch_runtime: Runtime) -> None:
    engine = Engine(torch_runtime, EngineSettings(max_rows=32))
    # Strength so low that no denoising step is left: refused while preparing, after text encoding.
    init = np.full((16, 16, 3), 128, dtype=np.uint8)
    bad = GenerationRequest("a red circle", seed=1, steps=4, init_image=init, strength=0.1)
    good = _requests()
    jobs = [engine.submit(r) for r in (good[0], bad, good[1])]
    engine.run_until_idle()
    with pytest.raises(EngineError, match="no denoising step"):
        jobs[1].result(timeout=0)
    assert all(j.result(timeout=0).image.shape == (16, 16, 3) for j in (jobs[0], jobs[2]))
    assert engine.load == 0
