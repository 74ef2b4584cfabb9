"""The continuous batching sampler: many requests of many tenants -> few, full U-Net passes.

Submission queues a request in its tenant's queue (fair_queue.py), all images of a request or none; a tenant
whose queued and running work (images x steps) would go over its cap is refused with TenantBusy, the others
are still admitted, and `max_queue` bounds the whole.

Every tick:
1. admit queued requests (bounded by `max_active`) by weighted fair sharing: the backlogged tenant with the
   least weighted work admitted so far goes first, so one tenant's backlog delays only itself; batched text
   encoding, TI spliced per row, uncond embeddings from the cache; per request its own scheduler, seeded
   generator and initial latents (img2img: batched VAE encode);
2. pick one latent shape (round-robin over shapes) and, within it, rows up to `max_rows` U-Net rows with
   per-tenant weighted round-robin (a tenant with 100 requests does not starve one with 1; a tenant of
   weight 2 gets two rows a round where one of weight 1 gets one);
3. pack the slot banks (one slot per distinct adapter set, slot 0 = none) and run ONE fused-CFG U-Net
   call for the guided rows and one plain call for the rest (rows with guidance <= 1, rows outside their
   guidance interval, and the cond/uncond rows of the uncond-refresh option); a call whose rows are all in
   slot 0 is marked adapter-free, so the runtime may run its base graph, which skips the banks;
4. step each request's scheduler; finished requests are decoded together (batched VAE) and resolved.
Requests join and leave at any tick; timesteps differ per row.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch

from adapters.byte_lru import ByteLRU
from adapters.packing import PackedBanks, PackedRowCache, adapter_set_key, pack_banks
from adapters.types import AdapterSet
from service.engine.errors import Cancelled, EngineError, QueueFull, TenantBusy
from service.engine.fair_queue import FairQueue
from service.engine.noise import initial_noise
from service.engine.request import GenerationRequest
from service.engine.samplers import make_scheduler, step_kwargs
from service.engine.text import PromptEncoder
from service.runtime.base import Runtime

Progress = Callable[[int, int], None]  # (steps done, steps total)
MiB = 1 << 20


@dataclass
class EngineConfig:
    max_rows: int = 16  # U-Net rows per call (a guided request counts 2)
    max_queue: int = 256  # queued + active requests; beyond that `submit` raises QueueFull
    max_active: int = 64  # requests holding latents at once
    # Packed adapter tensors kept between batches, in bytes (service/settings.py says why these sizes):
    row_cache_bytes: int = 128 * MiB  # rows per adapter set: a new batch composition packs from these
    bank_cache_bytes: int = 256 * MiB  # banks per batch composition: a repeated composition packs nothing
    uncond_cache_bytes: int = 64 * MiB  # unconditional embeddings per (negative prompt, text-side adapter set)
    idle_wait_s: float = 0.05
    # Comparators for `diffplex bench engine`, off in service: split CFG runs cond and uncond rows as two
    # U-Net calls; request-level batching admits new requests only when the running batch has finished.
    split_cfg: bool = False
    continuous: bool = True
    # Fair admission (fair_queue.py): tenant -> weight (absent: 1), and the images x steps one tenant may have
    # queued and running, times its weight, before `submit` raises TenantBusy (None: no cap). The service
    # sets both from `FairnessSettings`.
    weights: dict[str, float] = field(default_factory=dict)
    max_tenant_work: int | None = None


class _WorkRate:
    """Images x steps per second of busy engine time over the last ticks: what a refused tenant's Retry-After
    is estimated from. Idle time is not counted, so a quiet period does not make the estimate optimistic."""

    def __init__(self, ticks: int = 64) -> None:
        self._ticks: deque[tuple[int, float]] = deque(maxlen=ticks)  # (image-steps, seconds)

    def add(self, work: int, seconds: float) -> None:
        self._ticks.append((work, seconds))

    def per_s(self) -> float | None:
        seconds = sum(s for _, s in self._ticks)
        return sum(w for w, _ in self._ticks) / seconds if seconds > 0 else None


@dataclass
class GenerationResult:
    image: np.ndarray  # uint8 [H, W, 3]
    seed: int
    timings: dict[str, float]


@dataclass
class _Active:
    request: GenerationRequest
    future: Future
    progress: Progress | None
    submitted: float
    cancelled: threading.Event
    scheduler: object = None
    generator: torch.Generator | None = None
    latents: torch.Tensor | None = None
    cond: torch.Tensor | None = None
    uncond: torch.Tensor | None = None
    timesteps: list = field(default_factory=list)
    step: int = 0
    unet_key: str = ""
    uncond_pred: torch.Tensor | None = None  # cached for the uncond-refresh option
    started: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    ti_table: dict = field(default_factory=dict)
    resolved: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.latents.shape)

    @property
    def work(self) -> int:
        """Images x steps it holds against its tenant's cap (img2img runs fewer: the requested steps bound it)."""
        return self.request.steps

    @property
    def done(self) -> bool:
        return self.step >= len(self.timesteps)


class Job:
    """Handle of a submitted request: `future.result()` -> GenerationResult; `cancel()`."""

    def __init__(self, entry: _Active) -> None:
        self._entry = entry
        self.future: Future = entry.future
        self.request_id = entry.request.request_id

    def cancel(self) -> None:
        self._entry.cancelled.set()

    def result(self, timeout: float | None = None) -> GenerationResult:
        return self.future.result(timeout)


class Engine:
    def __init__(self, runtime: Runtime, config: EngineConfig | None = None) -> None:
        self.runtime = runtime
        self.info = runtime.info
        self.config = config or EngineConfig()
        self.row_cache = PackedRowCache(self.config.row_cache_bytes)
        self.text = PromptEncoder(runtime, self.row_cache, self.config.uncond_cache_bytes)
        self.bank_cache: ByteLRU[tuple[str, ...], PackedBanks] = ByteLRU(self.config.bank_cache_bytes)
        self._queue: FairQueue[_Active] = FairQueue(self.config.weights, self.config.max_tenant_work)
        self._rate = _WorkRate()
        self._active: list[_Active] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._outstanding = 0  # submitted and not yet resolved: what `load` and a draining stop wait for
        self._shape_turn = 0
        self._tenant_turn = 0
        self.stats = {"unet_calls": 0, "unet_rows": 0, "ticks": 0, "images": 0}
        self.size_multiple = self.info.size_multiple

    # -- submission --------------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, progress: Progress | None = None, capped: bool = True) -> Job:
        return self.submit_all([request], [progress], capped)[0]

    def submit_all(
        self, requests: list[GenerationRequest], progress: list[Progress | None] | None = None, capped: bool = True
    ) -> list[Job]:
        """Queue every request or none (the n images of one API request): QueueFull beyond `max_queue`,
        TenantBusy when the requests would put their tenant over its work cap. `capped=False` skips the cap,
        for work already accepted elsewhere (a stored job re-run), which must wait rather than fail."""
        callbacks = progress or [None] * len(requests)
        entries = []
        for request, callback in zip(requests, callbacks, strict=True):
            request.validate(self.info.image_size, self.size_multiple)
            entry = _Active(request, Future(), callback, time.perf_counter(), threading.Event())
            entry.ti_table = request.ti_table()  # a token owned twice fails here, at submission
            entries.append(entry)
        work: dict[str, int] = {}
        for entry in entries:
            work[entry.request.tenant] = work.get(entry.request.tenant, 0) + entry.work
        with self._lock:
            if self._outstanding + len(entries) > self.config.max_queue:
                raise QueueFull(f"the queue holds {self.config.max_queue} requests: retry shortly")
            for tenant, amount in work.items():
                if capped and not self._queue.fits(tenant, amount):
                    raise self._busy(tenant, amount)
            for entry in entries:
                self._queue.push(entry.request.tenant, entry, entry.work)
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

    def _resolve(self, entry: _Active, result: GenerationResult | None = None, error: Exception | None = None) -> None:
        """Settle a request once. Its future may already be done (a caller cancelled the future itself, e.g.
        an awaiting HTTP handler went away): the request still leaves the engine's count exactly once."""
        if entry.resolved:
            return
        entry.resolved = True
        with self._lock:  # its work no longer counts to its tenant's cap (before the caller sees the result)
            self._queue.release(entry.request.tenant, entry.work)
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
            self.stats["ticks"] += 1
            rows = self._pick_rows()
            self._isolated(self._denoise, rows)
            self._isolated(self._finish, [e for e in rows if e.done and not e.resolved])
            with self._lock:
                self._rate.add(len(rows), time.perf_counter() - started)
            return True
        except Exception as error:  # noqa: BLE001 - a failure outside any request's phase: keep the loop alive
            self._fail_all(error)
            return True

    def _isolated(self, phase: Callable[[list[_Active]], None], entries: list[_Active]) -> None:
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
            if not self.config.continuous and self._active:
                return
            room = self.config.max_active - len(self._active)
            popped = [self._queue.pop() for _ in range(min(room, len(self._queue)))]  # fair order (fair_queue.py)
            new = [e for e in popped if e is not None]
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

    def _admit_together(self, new: list[_Active]) -> None:
        """Batched text encoding and per-request setup; the entries become active only if all of it worked."""
        started = time.perf_counter()
        requests = [e.request for e in new]
        cond, uncond = self.text.encode_with_uncond(
            [r.prompt for r in requests],
            [r.negative_prompt if r.guided else None for r in requests],
            [e.ti_table for e in new],
            [r.text_adapters() for r in requests],
        )
        text_s = time.perf_counter() - started
        for i, entry in enumerate(new):
            entry.cond, entry.uncond = cond[i : i + 1], uncond[i][None] if uncond[i] is not None else None
            entry.timings["queue_s"] = started - entry.submitted
            entry.timings["text_s"] = text_s
            self._prepare(entry)
        with self._lock:
            self._active.extend(new)

    def _prepare(self, entry: _Active) -> None:
        request = entry.request
        entry.started = time.perf_counter()
        entry.unet_key = adapter_set_key(request.unet_adapters())
        entry.scheduler = make_scheduler(request.sampler, self.info.scheduler_config, request.steps)
        entry.generator = torch.Generator().manual_seed(request.seed)
        size = self.info.image_size
        height, width = request.height or size, request.width or size
        factor = self.info.vae_scale_factor
        shape = (1, self.info.latent_channels, height // factor, width // factor)
        timesteps = list(entry.scheduler.timesteps)
        if request.init_image is None:
            noise = initial_noise(shape, entry.generator, request.variation_seed, request.variation_strength)
            entry.latents = noise * entry.scheduler.init_noise_sigma
        else:
            entry.latents, timesteps = self._img2img_latents(entry, shape, timesteps)
        entry.timesteps = timesteps

    def _img2img_latents(self, entry: _Active, shape: tuple[int, ...], timesteps: list) -> tuple[torch.Tensor, list]:
        """diffusers' img2img: encode, draw the latent, skip the first (1 - strength) of the trajectory, re-noise."""
        request = entry.request
        pixels = torch.from_numpy(request.init_image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        mean, logvar = self.runtime.vae_encode(pixels).chunk(2, dim=1)
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        drawn = mean + std * torch.randn(mean.shape, generator=entry.generator, dtype=torch.float32)
        init = drawn * self.info.scaling_factor
        steps = request.steps
        start = max(steps - min(int(steps * request.strength), steps), 0)
        order = getattr(entry.scheduler, "order", 1)
        timesteps = timesteps[start * order :]
        if hasattr(entry.scheduler, "set_begin_index"):
            entry.scheduler.set_begin_index(start * order)
        if not timesteps:
            raise EngineError(f"strength {request.strength} with {steps} steps leaves no denoising step: raise either")
        noise = initial_noise(shape, entry.generator, request.variation_seed, request.variation_strength)
        return entry.scheduler.add_noise(init, noise, torch.as_tensor(timesteps[:1])), timesteps

    def _pick_rows(self) -> list[_Active]:
        """One latent shape, then per-tenant weighted round-robin up to `max_rows` U-Net rows: each round a
        tenant takes as many requests as its weight is a multiple of the smallest weight present (equal
        weights: one each, plain round-robin)."""
        shapes = sorted({e.shape for e in self._active})
        shape = shapes[self._shape_turn % len(shapes)]
        self._shape_turn += 1
        by_tenant: OrderedDict[str, deque[_Active]] = OrderedDict()
        for entry in self._active:  # arrival order within a tenant
            if entry.shape == shape:
                by_tenant.setdefault(entry.request.tenant, deque()).append(entry)
        tenants = list(by_tenant)
        offset = self._tenant_turn % len(tenants)
        self._tenant_turn += 1
        order = tenants[offset:] + tenants[:offset]
        lightest = min(self._queue.weight(t) for t in tenants)
        quantum = {t: max(1, round(self._queue.weight(t) / lightest)) for t in tenants}
        picked: list[_Active] = []
        budget = self.config.max_rows
        while budget > 0 and any(by_tenant[t] for t in order):
            for tenant in order:
                queue = by_tenant[tenant]
                for _ in range(min(quantum[tenant], len(queue))):
                    cost = 2 if queue[0].request.guided else 1
                    if cost > budget:
                        if not picked:  # max_rows 1 with a guided request: still make progress
                            picked.append(queue.popleft())
                        return picked
                    picked.append(queue.popleft())
                    budget -= cost
        return picked

    def _banks_for(self, sets: list[tuple[str, AdapterSet]]) -> tuple[PackedBanks, dict[str, int]]:
        """Banks with one slot per distinct adapter set, cached per batch composition."""
        distinct = list(dict.fromkeys(k for k, _ in sets))
        key = tuple(distinct)
        packed = self.bank_cache.get(key)
        if packed is None:
            chosen = {k: s for k, s in sets}
            packed = pack_banks(
                [chosen[k] for k in distinct],
                self.info.spec,
                self.info.lora_rank,
                self.info.vpt_tokens,
                cache=self.row_cache,
                components=("unet",),  # the text encoder's banks are packed at admission (text.py)
            )
            self.bank_cache.put(key, packed, packed.nbytes)
        slot_of = {k: int(packed.adapter_slot[i]) for i, k in enumerate(distinct)}
        return packed, slot_of

    def _denoise(self, rows: list[_Active]) -> None:
        started = time.perf_counter()
        packed, slot_of = self._banks_for([(e.unet_key, e.request.unet_adapters()) for e in rows])
        fused, plain, plain_uncond = [], [], []  # plain_uncond: (entry, needs a fresh uncond prediction)
        for entry in rows:
            request = entry.request
            fraction = entry.step / max(1, len(entry.timesteps))
            lo, hi = request.guidance_interval
            guide = request.guided and lo <= fraction < hi
            if not guide:
                plain.append(entry)
            elif request.uncond_refresh == 1:
                fused.append(entry)
            else:
                plain_uncond.append((entry, entry.uncond_pred is None or entry.step % request.uncond_refresh == 0))
        inputs = {id(e): self._model_input(e) for e in rows}
        outputs: dict[int, torch.Tensor] = {}
        if fused and self.config.split_cfg:
            outputs.update(self._split_cfg(fused, inputs, slot_of, packed))
        elif fused:
            sample = torch.cat([inputs[id(e)][0] for e in fused])
            slots = torch.tensor([slot_of[e.unet_key] for e in fused], dtype=torch.int64)
            noise = self.runtime.unet_cfg(
                sample,
                torch.cat([inputs[id(e)][1] for e in fused]),
                torch.cat([e.cond for e in fused]),
                torch.cat([e.uncond for e in fused]),
                torch.tensor([e.request.guidance_scale for e in fused], dtype=torch.float32),
                slots,
                packed.unet,
                adapter_free=_adapter_free(slots),
            )
            outputs.update({id(e): noise[i : i + 1] for i, e in enumerate(fused)})
            self._count(2 * len(fused))
        # Plain call: cond rows of unguided / refresh requests, plus uncond rows where a refresh is due.
        plain_rows = [(e, e.cond) for e in plain] + [(e, e.cond) for e, _ in plain_uncond]
        plain_rows += [(e, e.uncond) for e, fresh in plain_uncond if fresh]
        if plain_rows:
            slots = torch.tensor([slot_of[e.unet_key] for e, _ in plain_rows], dtype=torch.int64)
            noise = self.runtime.unet(
                torch.cat([inputs[id(e)][0] for e, _ in plain_rows]),
                torch.cat([inputs[id(e)][1] for e, _ in plain_rows]),
                torch.cat([context for _, context in plain_rows]),
                slots,
                packed.unet,
                adapter_free=_adapter_free(slots),
            )
            self._count(len(plain_rows))
            for i, entry in enumerate(plain):
                outputs[id(entry)] = noise[i : i + 1]
            fresh_rows = iter(range(len(plain) + len(plain_uncond), len(plain_rows)))
            for j, (entry, fresh) in enumerate(plain_uncond):
                cond = noise[len(plain) + j : len(plain) + j + 1]
                if fresh:
                    k = next(fresh_rows)
                    entry.uncond_pred = noise[k : k + 1]
                g = entry.request.guidance_scale
                outputs[id(entry)] = entry.uncond_pred + g * (cond - entry.uncond_pred)
        elapsed = time.perf_counter() - started
        for entry in rows:
            t = entry.timesteps[entry.step]
            kwargs = step_kwargs(entry.scheduler, entry.generator, entry.request.eta)
            entry.latents = entry.scheduler.step(outputs[id(entry)], t, entry.latents, **kwargs).prev_sample
            entry.step += 1
            entry.timings["denoise_s"] = entry.timings.get("denoise_s", 0.0) + elapsed
            if entry.progress is not None:
                entry.progress(entry.step, len(entry.timesteps))

    def _split_cfg(
        self, rows: list[_Active], inputs: dict, slot_of: dict[str, int], packed: PackedBanks
    ) -> dict[int, torch.Tensor]:
        """The classic two-call CFG (the comparator of the fused graph): cond rows, then uncond rows."""
        sample = torch.cat([inputs[id(e)][0] for e in rows])
        t = torch.cat([inputs[id(e)][1] for e in rows])
        slots = torch.tensor([slot_of[e.unet_key] for e in rows], dtype=torch.int64)
        free = _adapter_free(slots)
        cond = self.runtime.unet(sample, t, torch.cat([e.cond for e in rows]), slots, packed.unet, adapter_free=free)
        uncond = self.runtime.unet(
            sample, t, torch.cat([e.uncond for e in rows]), slots, packed.unet, adapter_free=free
        )
        self._count(len(rows))
        self._count(len(rows))
        scale = torch.tensor([e.request.guidance_scale for e in rows]).view(-1, 1, 1, 1)
        guided = uncond + scale * (cond - uncond)
        return {id(e): guided[i : i + 1] for i, e in enumerate(rows)}

    def _model_input(self, entry: _Active) -> tuple[torch.Tensor, torch.Tensor]:
        t = entry.timesteps[entry.step]
        sample = entry.scheduler.scale_model_input(entry.latents, t)
        return sample, torch.as_tensor(t, dtype=torch.float32).reshape(1)

    def _count(self, rows: int) -> None:
        self.stats["unet_calls"] += 1
        self.stats["unet_rows"] += rows

    def _finish(self, done: list[_Active]) -> None:
        if not done:
            return
        started = time.perf_counter()
        by_shape: dict[tuple[int, ...], list[_Active]] = {}
        for entry in done:
            by_shape.setdefault(entry.shape, []).append(entry)
        images: dict[int, np.ndarray] = {}
        for group in by_shape.values():  # one batched decode per latent shape
            decoded = self.runtime.vae_decode(torch.cat([e.latents for e in group]))
            pixels = ((decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
            images.update({id(e): pixels[i] for i, e in enumerate(group)})
        decode_s = time.perf_counter() - started
        with self._lock:
            self._active = [e for e in self._active if not e.done]
        for entry in done:
            entry.timings["decode_s"] = decode_s
            entry.timings["total_s"] = time.perf_counter() - entry.submitted
            self.stats["images"] += 1
            self._resolve(entry, GenerationResult(images[id(entry)], entry.request.seed, dict(entry.timings)))

    def _fail(self, entries: list[_Active], error: Exception) -> None:
        gone = {id(e) for e in entries}
        with self._lock:
            self._active = [e for e in self._active if id(e) not in gone]
        for entry in entries:
            self._resolve(entry, error=error)

    def _fail_all(self, error: Exception) -> None:
        with self._lock:
            failed = list(self._active)
        self._fail(failed, error)


def _adapter_free(slots: torch.Tensor) -> bool:
    """Every row in slot 0: banks come from `pack_banks`, whose slot 0 is all zeros, so the call is the base
    model's and the runtime may skip the banks (`Runtime.unet_cfg`'s `adapter_free`)."""
    return not bool(slots.any())
