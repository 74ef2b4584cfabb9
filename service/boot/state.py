"""What the app holds between requests: the store at once, the model parts once the background load ends.

The model loads after the server starts listening, so `/livez` answers and `/readyz` says "loading"
(503) meanwhile; model routes answer 503 with Retry-After until then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
from fastapi import Depends, Request

from adapters import ExportLimits
from service.core.metrics import Metrics
from service.core.settings import Settings
from service.engine import Engine
from service.generation.params import ImageParams
from service.generation.plan import Plan, plan
from service.generation.runner import Runner
from service.hotload.cache import AdapterCache
from service.hotload.upload_slots import UploadSlots
from service.jobs.manager import JobManager
from service.runtime.base import BackboneInfo
from service.stores.base import Store
from service.worker import StreamWorker


@dataclass
class ModelParts:
    info: BackboneInfo  # what requests and adapter uploads are validated against
    cache: AdapterCache
    jobs: JobManager
    limits: ExportLimits
    # The model that runs requests: None on an API replica of role "api", which validates and enqueues only and
    # holds the backbone's shapes and fingerprint, not its weights (service/runtime/loader.py).
    engine: Engine | None = None
    runner: Runner | None = None
    worker: StreamWorker | None = None  # runs jobs from the Redis job stream (roles "all" and "worker")


@dataclass
class ServiceState:
    settings: Settings
    store: Store
    metrics: Metrics
    admin_key: str
    model: ModelParts | None = None
    load_error: str | None = None
    stopping: bool = False
    uploads: UploadSlots = field(init=False)  # per-tenant uploads in flight (settings.limits.max_concurrent_uploads)

    def __post_init__(self) -> None:
        self.uploads = UploadSlots(self.settings.limits.max_concurrent_uploads)

    def plan(
        self,
        params: ImageParams,
        tenant: str,
        epoch: str | None,
        request_id: str = "",
        init_image: np.ndarray | None = None,
        strength: float = 0.8,
    ) -> Plan:
        """Blocking: run it in a worker thread. `epoch`: the tenant incarnation the request authenticated as
        (None: the current one); only adapters it wrote are used."""
        assert self.model is not None
        info = self.model.info
        return plan(
            params,
            tenant,
            self.store,
            self.model.cache,
            self.settings,
            info,
            init_image=init_image,
            strength=strength,
            request_id=request_id,
            epoch=epoch,
        )


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


State = Annotated[ServiceState, Depends(get_state)]  # a route's or dependency's parameter: the app's state
