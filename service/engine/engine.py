"""The continuous batching sampler: many requests of many tenants -> few, full U-Net passes.

Submission queues a request in its tenant's queue (fair_queue.py), all images of a request or none; a tenant
whose queued and running work (images x steps) would go over its cap is refused with TenantBusy, the others
are still admitted, and `max_queue` bounds the whole.

Every tick:
1. admit queued requests (bounded by `max_active`) by weighted fair sharing: the backlogged tenant with the
   least weighted work admitted so far goes first, so one tenant's backlog delays only itself; batched text
   encoding, TI spliced per row, uncond embeddings from the cache (text.py); per request its own scheduler,
   seeded generator and initial latents (latents.py; img2img: batched VAE encode);
2. pick the rows: one latent shape, then per-tenant weighted round-robin up to `max_rows` U-Net rows
   (scheduler.py);
3. run them: one fused-CFG U-Net call for the guided rows and one plain call for the rest (model_runner.py,
   guidance.py);
4. step each request's scheduler; finished requests are decoded together (batched VAE) and resolved.
Requests join and leave at any tick; timesteps differ per row.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np
import torch

from adapters.packing import PackedRowCache, adapter_set_key
from service.core.settings import EngineSettings, FairnessSettings
from service.engine.errors import Cancelled, QueueFull, TenantBusy
from service.engine.fair_queue import FairQueue
from service.engine.job import ActiveRequest, GenerationResult, Job, Progress
from service.engine.latents import img2img_latents, latent_shape, to_pixels, txt2img_latents
from service.engine.model_runner import ModelRunner
from service.engine.request import GenerationRequest
from service.engine.samplers import make_scheduler, step_kwargs
from service.engine.scheduler import pick_rows
from service.engine.step_cache import request_feature_bytes
from service.engine.text import PromptEncoder
from service.engine.work_rate import WorkRate
from service.runtime.base import Runtime


class Engine:
    def __init__(
        self, runtime: Runtime, config: EngineSettings | None = None, fairness: FairnessSettings | None = None
    ) -> None:
        """`fairness`: tenant weights and the per-tenant work cap; None: equal weights and no cap."""
        self.runtime = runtime
        self.info = runtime.info
        self.config = config or EngineSettings()
        self.row_cache = PackedRowCache(self.config.row_cache_bytes)
        self.text = PromptEncoder(runtime, self.row_cache, self.config.uncond_cache_bytes)
        self.model = ModelRunner(runtime, self.row_cache, self.config.bank_cache_bytes)
        self._queue: FairQueue[ActiveRequest] = (
            FairQueue(fairness.weights, fairness.max_tenant_work) if fairness is not None else FairQueue()
        )
        self._rate = WorkRate()
        self._active: list[ActiveRequest] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._outstanding = 0  # submitted and not yet resolved: what `load` and a draining stop wait for
        self._feature_bytes = 0  # step caching's features the active requests may hold (`reserved_bytes`)
        self._ticks = 0  # busy ticks: the scheduler's turn
        self._images = 0
        self.size_multiple = self.info.size_multiple

    @property
    def stats(self) -> dict[str, int]:
        """Counters since start: U-Net calls and rows (a fused-CFG call over N requests runs 2N; of them, those run on
        the shallow path of step caching), busy ticks, images."""
        return {
            "unet_calls": self.model.calls,
            "unet_rows": self.model.rows,
            "unet_shallow_rows": self.model.shallow_rows,
            "ticks": self._ticks,
            "images": self._images,
        }

    # -- submission --------------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, progress: Progress | None = None, capped: bool = True) -> Job:
        return self.submit_all([request], [progress], capped)[0]

    def submit_all(
        self, requests: list[GenerationRequest], progress: list[Progress | None] | None = None, capped: bool = True
    ) -> list[Job]:
        """Queue every request or none (the n images of one API request): QueueFull beyond `max_queue`,
        TenantBusy when the requests would put their tenant over its work cap. `capped=False` skips the cap,
        for work already accepted elsewhere (a stored job re-run), which must wait rather than fail.

        A request planned for this backbone (service/generation/plan.py validates it) is trusted; any other is
        validated here, so a direct submission (tests, benchmarks) is as safe as a planned one."""
        callbacks = progress or [None] * len(requests)
        for request in requests:
            if not request.validated(self.info.image_size, self.size_multiple):
                request.validate(
                    self.info.image_size, self.size_multiple, self.info.xl is not None, self.runtime.step_cache
                )
        entries = [
            ActiveRequest(request, Future(), callback, time.perf_counter(), threading.Event())
            for request, callback in zip(requests, callbacks, strict=True)
        ]
        for entry in entries:  # EngineError for one whose features could never fit
            entry.feature_bytes = request_feature_bytes(entry.request, self.info, self.config.step_cache_bytes)
        work: dict[str, int] = {}
        for entry in entries:
            work[entry.tenant] = work.get(entry.tenant, 0) + entry.work
        with self._lock:
            if self._outstanding + len(entries) > self.config.max_queue:
                raise QueueFull(f"the queue holds {self.config.max_queue} requests, the most it takes")
            for tenant, amount in work.items():
                if capped and not self._queue.fits(tenant, amount):
                    raise self._busy(tenant, amount)
            for entry in entries:
                self._queue.push(entry.tenant, entry, entry.work)
            self._outstanding += len(entries)
        self._wake.set()
        return [Job(entry) for entry in entries]

    def _busy(self, tenant: str, work: int) -> TenantBusy:
        """The refusal of `work` more for a tenant at its cap (under the lock), with an estimate of when it fits."""
        cap = int(self._queue.cap(tenant) or 0)
        held = self._queue.outstanding(tenant)
        rate = self._rate.per_s()
        # Without a measured rate (nothing has run yet) there is no honest estimate: the minimum, 1 s.
        wait_s = 1.0 if rate is None else self._queue.retry_after_s(tenant, work, rate)
        return TenantBusy(
            f"this tenant already has {held} image-steps queued and running, and this request adds {work}: the limit "
            f"is {cap} (images x steps of its unfinished requests); wait for some to finish, or ask for fewer "
            "images or steps",
            max(1.0, wait_s),
        )

    @property
    def work_per_s(self) -> float | None:
        """Images x steps per second of busy time over the last ticks (None before any); Retry-After's basis."""
        with self._lock:
            return self._rate.per_s()

    @property
    def load(self) -> int:
        """Requests submitted and not yet resolved (queued, being admitted, or denoising)."""
        with self._lock:
            return self._outstanding

    def _resolve(
        self, entry: ActiveRequest, result: GenerationResult | None = None, error: Exception | None = None
    ) -> None:
        """Settle a request once. Its future may already be done (a caller cancelled the future itself, e.g.
        an awaiting HTTP handler went away): the request still leaves the engine's count exactly once."""
        if entry.resolved:
            return
        entry.resolved = True
        entry.features.clear()
        with self._lock:  # its work no longer counts to its tenant's cap (before the caller sees the result)
            self._queue.release(entry.tenant, entry.work)
            self._feature_bytes -= entry.reserved_bytes
            entry.reserved_bytes = 0
        if not entry.future.done():
            if error is None:
                entry.future.set_result(result)
            else:
                entry.future.set_exception(error)
        with self._lock:
            self._outstanding -= 1

    # -- running -----------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="diffplex-engine", daemon=True)
            self._thread.start()

    def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop the loop; with `drain`, after every admitted and queued request has finished."""
        if drain:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self.load and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.01)
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stopping:
            if not self.tick():
                self._wake.wait(self.config.idle_wait_s)
                self._wake.clear()

    def run_until_idle(self) -> None:
        """Synchronous driving, for tests and in-process benchmarks."""
        while self.tick():
            pass

    def tick(self) -> bool:
        """One scheduling round; False when there was nothing to do."""
        try:
            started = time.perf_counter()
            self._drop_cancelled()
            self._admit()
            if not self._active:
                return False
            rows = pick_rows(self._active, self.config.max_rows, self._queue.weight, self._ticks)
            self._ticks += 1
            self._isolated(self._denoise, rows)
            self._isolated(self._finish, [e for e in rows if e.done and not e.resolved])
            with self._lock:
                self._rate.add(len(rows), time.perf_counter() - started)
            return True
        except Exception as error:  # noqa: BLE001 - a failure outside any request's phase: keep the loop alive
            self._fail_all(error)
            return True

    def _isolated(self, phase: Callable[[list[ActiveRequest]], None], entries: list[ActiveRequest]) -> None:
        """Run `phase` on `entries` together; if it fails, again one by one, so only the culprit fails.

        A bad row (an adapter whose banks break the graph, a runtime error on one shape) must not take
        down the other tenants' requests that happened to share its U-Net call. Entries the failed
        attempt already advanced (stepped or resolved) are not run twice.
        """
        if not entries:
            return
        before = {id(e): (e.step, e.resolved) for e in entries}
        try:
            phase(entries)
            return
        except Exception as error:  # noqa: BLE001 - isolated below
            if len(entries) == 1:
                self._fail(entries, error)
                return
        for entry in entries:
            if (entry.step, entry.resolved) != before[id(entry)]:
                continue
            try:
                phase([entry])
            except Exception as error:  # noqa: BLE001 - this request alone fails
                self._fail([entry], error)

    # -- phases ------------------------------------------------------------------------------------------
    def _drop_cancelled(self) -> None:
        with self._lock:
            for e in [*self._queue, *self._active]:
                if e.future.cancelled():  # the caller cancelled the future itself: stop spending rows on it
                    e.cancelled.set()
            gone = self._queue.discard(lambda e: e.cancelled.is_set())
            gone += [e for e in self._active if e.cancelled.is_set()]
            self._active = [e for e in self._active if not e.cancelled.is_set()]
        for entry in gone:
            self._resolve(entry, error=Cancelled(f"request {entry.request.request_id} was cancelled"))

    def _admit(self) -> None:
        with self._lock:
            room = self.config.max_active - len(self._active)
            if self.config.batching == "request" and self._active:
                room = 0  # request-level batching: the running batch finishes first
            new: list[ActiveRequest] = []
            # Fair order (fair_queue.py). A request whose step-caching features do not fit beside the active
            # requests' waits at its place, and those behind it with it: none overtakes it.
            while len(new) < room and (head := self._queue.peek()) is not None:
                if self._feature_bytes + head.feature_bytes > self.config.step_cache_bytes:
                    break
                new.append(self._queue.pop())
                head.reserved_bytes = head.feature_bytes
                self._feature_bytes += head.feature_bytes
        if not new:
            return
        try:
            self._admit_together(new)
        except Exception:  # noqa: BLE001 - find the request that failed; the others are admitted
            for entry in new:
                try:
                    self._admit_together([entry])
                except Exception as error:  # noqa: BLE001 - bad adapters etc. fail this request only
                    self._resolve(entry, error=error)

    def _admit_together(self, new: list[ActiveRequest]) -> None:
        """Batched text encoding and per-request setup; the entries become active only if all of it worked."""
        started = time.perf_counter()
        cond, uncond = self.text.encode_requests([e.request for e in new])
        text_s = time.perf_counter() - started
        for i, entry in enumerate(new):
            entry.cond = cond.rows(i, i + 1)
            entry.uncond = uncond[i]
            entry.timings["queue_s"] = started - entry.submitted
            entry.timings["text_s"] = text_s
            self._prepare(entry)
        with self._lock:
            self._active.extend(new)

    def _prepare(self, entry: ActiveRequest) -> None:
        """The request's own scheduler, seeded generator, starting latents and timesteps."""
        request = entry.request
        entry.started = time.perf_counter()
        entry.unet_key = adapter_set_key(request.unet_adapters())
        entry.scheduler = make_scheduler(request.sampler, self.info.scheduler_config, request.steps)
        entry.generator = torch.Generator().manual_seed(request.seed)
        if self.info.xl is not None:
            entry.time_ids = request.time_ids(self.info.image_size)
        shape = latent_shape(request, self.info)
        if request.init_image is None:
            entry.latents, entry.timesteps = txt2img_latents(request, entry.scheduler, entry.generator, shape)
        else:
            entry.latents, entry.timesteps = img2img_latents(
                request, entry.scheduler, entry.generator, shape, self.runtime
            )

    def _denoise(self, rows: list[ActiveRequest]) -> None:
        started = time.perf_counter()
        noise = self.model.predict(rows)
        elapsed = time.perf_counter() - started
        for entry, prediction in zip(rows, noise, strict=True):
            t = entry.timesteps[entry.step]
            kwargs = step_kwargs(entry.scheduler, entry.generator, entry.request.eta)
            entry.latents = entry.scheduler.step(prediction, t, entry.latents, **kwargs).prev_sample
            entry.step += 1
            entry.timings["denoise_s"] = entry.timings.get("denoise_s", 0.0) + elapsed
            if entry.progress is not None:
                entry.progress(entry.step, len(entry.timesteps))

    def _finish(self, done: list[ActiveRequest]) -> None:
        if not done:
            return
        started = time.perf_counter()
        by_shape: dict[tuple[int, ...], list[ActiveRequest]] = {}
        for entry in done:
            by_shape.setdefault(entry.shape, []).append(entry)
        images: dict[int, np.ndarray] = {}
        for group in by_shape.values():  # one batched decode per latent shape
            pixels = to_pixels(self.runtime.vae_decode(torch.cat([e.latents for e in group])))
            images.update({id(e): pixels[i] for i, e in enumerate(group)})
        decode_s = time.perf_counter() - started
        with self._lock:
            self._active = [e for e in self._active if not e.done]
        for entry in done:
            entry.timings["decode_s"] = decode_s
            entry.timings["total_s"] = time.perf_counter() - entry.submitted
            self._images += 1
            self._resolve(entry, GenerationResult(images[id(entry)], entry.request.seed, dict(entry.timings)))

    def _fail(self, entries: list[ActiveRequest], error: Exception) -> None:
        gone = {id(e) for e in entries}
        with self._lock:
            self._active = [e for e in self._active if id(e) not in gone]
        for entry in entries:
            self._resolve(entry, error=error)

    def _fail_all(self, error: Exception) -> None:
        with self._lock:
            failed = list(self._active)
        self._fail(failed, error)
