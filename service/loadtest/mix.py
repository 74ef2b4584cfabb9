"""Drawing requests from a workload's weighted mix: a tenant by its weight, then one entry it may send."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.loadtest.workload import RequestSpec, Workload

MAX_DRAWN_SEED = 2**31 - 1


@dataclass(frozen=True)
class Draw:
    tenant: str
    entry: str  # the mix entry's name, for per-entry figures
    body: dict[str, Any]
    images: int  # n: images the request asks for


class RequestMix:
    """Deterministic for a given seed: the same workload and seed send the same sequence of requests."""

    def __init__(self, workload: Workload, seed: int | Sequence[int]) -> None:
        self.rng = np.random.default_rng(seed)
        self.tenants = [t.name for t in workload.tenants]
        weights = np.array([t.weight for t in workload.tenants])
        self.tenant_p = weights / weights.sum()
        self.entries: dict[str, list[tuple[str, RequestSpec]]] = {t: workload.entries_for(t) for t in self.tenants}

    def draw(self) -> Draw:
        tenant = self.tenants[self.rng.choice(len(self.tenants), p=self.tenant_p)]
        return self.draw_for(tenant)

    def draw_for(self, tenant: str) -> Draw:
        entries = self.entries[tenant]
        weights = np.array([spec.weight for _, spec in entries])
        name, spec = entries[self.rng.choice(len(entries), p=weights / weights.sum())]
        prompts = spec.prompt_choices
        prompt = prompts[self.rng.integers(len(prompts))]
        seed = int(self.rng.integers(MAX_DRAWN_SEED))
        return Draw(tenant, name, spec.body(prompt, seed), spec.n)
