"""The service's one configuration object: every knob is a `DIFFPLEX_*` environment variable.

Nested groups use `__` (`DIFFPLEX_LIMITS__MAX_STEPS=50`, `DIFFPLEX_ENGINE__MAX_ROWS=32`), so a deployment
changes one limit without restating the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.targets import DEFAULT_LORA_RANK, DEFAULT_VPT_TOKENS
from models.shapes.paths import PIPELINE_DIR

MiB = 1 << 20

# The runtimes a deployment may run (service/runtime/loader.py `load_runtime`): the reference, and the two that run
# an export's graphs.
Backend = Literal["pytorch", "onnxruntime", "tensorrt"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)

DEFAULT_MODEL_DIR = PIPELINE_DIR  # the embedded default backbone


class Limits(BaseModel):
    """What one request or tenant may ask for; anything beyond gets a 4xx saying which limit it hit."""

    max_n: int = 8  # images per request
    max_steps: int = 100
    max_prompt_chars: int = 1000
    # JSON bodies: a generation or job body is a few kilobytes; a large one only costs the event loop time
    # (image edits and adapter uploads have their own caps, below).
    max_body_bytes: int = 64 * 1024
    max_upload_bytes: int = 64 * MiB  # edit images (the decoded size is checked from the header, images.py)
    # Adapter files. A rank-128 SD-1.5 LoRA (U-Net and text encoder, fp16) is about 150 MiB: the default takes
    # the ranks the banks take (`engine.lora_rank`, 128), and the tenant's byte quota still bounds the total.
    max_adapter_upload_bytes: int = 256 * MiB
    max_field_chars: int = 256  # free-text fields stored with a job that mean nothing here (`user`, ...)
    rate_per_minute: int = 600  # generation requests per tenant per minute (0: unlimited)
    upload_rate_per_minute: int = 30  # adapter uploads per tenant per minute (0: unlimited)
    max_concurrent_uploads: int = 2  # adapter uploads and edits of one tenant being received at once
    job_ttl_s: int = 24 * 3600  # how long job records and generated files are kept
    max_adapters_per_tenant: int = 100
    max_adapter_bytes_per_tenant: int = 1024 * MiB
    max_adapters_per_request: int = 8
    # Stored per tenant for `job_ttl_s`: job records (each holds its request, up to a few kB) and generated
    # files (`response_format: url`); over these a new job or url image is refused (403 quota_exceeded).
    max_jobs_per_tenant: int = 2000
    max_job_bytes_per_tenant: int = 256 * MiB  # a finished b64_json job holds its images in its record
    max_files_per_tenant: int = 2000
    max_file_bytes_per_tenant: int = 256 * MiB


class FairnessSettings(BaseModel):
    """How tenants share the engine (weighted fair queuing): each tenant has its own queue, and admission
    serves the tenant with the least weighted work admitted so far, so a tenant's share of the U-Net follows
    its weight however much it sends."""

    weights: dict[str, float] = Field(default_factory=dict)  # tenant name -> weight; absent: 1
    # Images x steps one tenant may have queued and running at once, scaled by its weight; a request over it
    # is refused with 429 + Retry-After while other tenants are still admitted. 3,200 = 4 requests of
    # n=8 x 100 steps: a tenant never waits behind more than the caps of the tenants ahead of it.
    max_tenant_work: int = Field(3200, ge=1)


class HttpSettings(BaseModel):
    """The HTTP server's own bounds (uvicorn and the request middleware): what a slow or abusive client may
    hold before it is cut off."""

    max_connections: int = Field(256, ge=1)  # concurrent connections and requests; beyond: 503
    body_timeout_s: float = Field(30.0, gt=0)  # the whole body must arrive within this (1 byte/s clients)
    body_idle_timeout_s: float = Field(10.0, gt=0)  # and no pause between its chunks longer than this
    head_timeout_s: float = Field(10.0, gt=0)  # a request's line and headers (a few hundred bytes) within this
    # Image URLs (`response_format: url`) are built from this, never from the request's Host header, which
    # a client chooses. None: http://{host}:{port} of these settings.
    public_base_url: str | None = None


# Step caching's interval (a request's `cache_interval`): beyond this the deep features are staler than any measured
# setting is worth (BENCHMARKS.md, guidance options). The body's schema and the engine check it.
MAX_CACHE_INTERVAL = 10


class EngineSettings(BaseModel):
    """The engine's one configuration (`Engine(runtime, settings.engine, settings.fairness)`), and the knobs of
    the runtime it drives."""

    max_rows: int = Field(16, ge=1)  # U-Net rows per call (a guided request counts 2)
    max_queue: int = Field(256, ge=1)  # queued + active requests; beyond that a submission is refused (QueueFull)
    max_active: int = Field(64, ge=1)  # requests holding latents at once
    # "continuous": requests join the running batch at any step (the engine's design). "request": request-level
    # batching, the classic server's: a batch is admitted only when the last one has finished, for comparing the
    # two under load (`diffplex loadtest compare`); never faster.
    batching: Literal["continuous", "request"] = "continuous"
    idle_wait_s: float = Field(0.05, gt=0)  # how long the idle engine thread sleeps when no submission wakes it
    # R, the PyTorch backend's rank cap: the largest total LoRA rank a request may put on one module (exported
    # backends read theirs from the manifest); each call's banks carry their own.
    lora_rank: int = Field(DEFAULT_LORA_RANK, ge=1)
    vpt_tokens: int = DEFAULT_VPT_TOKENS  # P, likewise
    threads: int | None = None
    # Exported backends: run calls whose rows carry no adapter on the U-Net graphs without banks (1.5x
    # faster on the shapes backbone, BENCHMARKS.md) at the cost of a second session per U-Net graph (its
    # weights again in memory); off runs those calls banked.
    base_graphs: bool = True
    # Likewise calls whose rows carry no VPT tokens, on the U-Net graphs with LoRA banks only (1.19x for a
    # batch of 8 LoRAs), at the cost of another session per U-Net graph. Both off keep one copy of the weights.
    lora_graphs: bool = True
    # Packed adapter tensors the engine keeps between batches, bounded in bytes (LRU), on top of
    # `adapter_cache_bytes`. Rows: one copy per recent adapter set at its own rank, about the adapter's size, so a
    # quarter of the adapter cache covers the sets of the running requests with room to spare. Banks: one
    # per recent batch composition, every LoRA target of the U-Net for each of its slots, so they get more.
    row_cache_bytes: int = Field(128 * MiB, ge=0)
    bank_cache_bytes: int = Field(256 * MiB, ge=0)
    # Unconditional embeddings per (negative prompt, text-side adapter set): [77, D] floats each, so 64 MiB
    # holds about 280 negatives for SD-1.5 (D = 768) and 1,700 for the shapes backbone.
    uncond_cache_bytes: int = Field(64 * MiB, ge=0)
    # Step caching's deep features, held by the active requests that ask for it (`cache_interval` > 1): one
    # [F, h, w] float tensor per U-Net row, 64 KiB per request on the shapes backbone, 10.5 MB on SD-1.5 at 512 px
    # (21 MB guided), 42 MB on SDXL at 1024 px. A request waits in the queue while its features would go over;
    # one that alone would is refused. 0 turns step caching off.
    step_cache_bytes: int = Field(512 * MiB, ge=0)


class JobSettings(BaseModel):
    """Async jobs survive a replica's crash: the owner heart-beats them; others re-run stale ones."""

    heartbeat_s: float = 1.0
    stale_after_s: float = 30.0  # also the idle time after which a worker's stream entries are reclaimed
    recovery_every_s: float = 10.0
    result_poll_s: float = 0.1  # an API replica of role "api" waiting for a synchronous request's result


class WorkerSettings(BaseModel):
    """`diffplex worker`: a consumer of the Redis job stream (service/worker/)."""

    port: int = 8001  # its health and metrics port (/livez, /readyz, /metrics)
    group: str = "workers"  # the stream's consumer group
    consumer: str | None = None  # default: hostname-pid (the pod name under Kubernetes)
    max_images: int | None = None  # images in flight in the engine; default: engine.max_active
    block_ms: int = 1000  # XREADGROUP wait
    max_attempts: int = 3  # runs of one job (it crashed its worker each time) before it is failed


class RedisClientSettings(BaseModel):
    """How long a Redis command may wait. A Redis that is down, restarting or frozen must not hold requests:
    the command gives up, the API answers 503 + Retry-After, and the client retries later."""

    connect_timeout_s: float = Field(1.0, gt=0)
    timeout_s: float = Field(2.0, gt=0)  # a reply; a worker adds its XREADGROUP block time (stores/open.py)
    # Retries of a command whose connection failed (refused, reset): after a restart each pooled connection
    # is stale once, and one retry on a fresh one hides that. Timeouts are not retried: that is a slow or
    # frozen Redis, where waiting again only delays the 503.
    retries: int = Field(1, ge=0)
    retry_backoff_s: float = Field(0.05, ge=0)  # retry n waits this x 2^n (redis-py ExponentialBackoff)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DIFFPLEX_", env_nested_delimiter="__", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    # How long an idle keep-alive connection stays open. It must outlive the idle timeout of whatever
    # reuses connections in front of it (httpx and requests pools: 5 s; load balancers: 60 s), or the
    # server closes a connection just as a client sends on it and the client sees a reset, not an answer
    # (measured: 6 of 8984 requests under overload with uvicorn's default of 5 s).
    keep_alive_s: int = Field(75, gt=0)
    data_dir: Path = Path(".work/data")
    redis_url: str | None = None  # None: the embedded LocalStore in `data_dir`
    redis_prefix: str = "diffplex:"
    redis_client: RedisClientSettings = Field(default_factory=RedisClientSettings)
    # api: enqueue only (needs Redis); worker: `diffplex worker`; all: serve and run (embedded default)
    role: Literal["all", "api", "worker"] = "all"
    admin_key: SecretStr | None = None  # None in embedded mode: generated into data_dir/admin_key
    backend: Backend = "pytorch"
    model_dir: Path = DEFAULT_MODEL_DIR
    # The weights variant of `model_dir` to load ("fp16": `unet/diffusion_pytorch_model.fp16.safetensors`...),
    # upcast to fp32. None: the plain weights, or the one variant a component holds without them.
    model_variant: str | None = None
    # When `model_dir` names a single-file checkpoint (.safetensors / .ckpt, LDM layout), it is converted once into
    # `data_dir/models` and served from there. What it predicts, when its family's default is wrong (SD-2: v-prediction
    # at 768 px, unless a .ckpt says it is the 512 px base model), and a diffusers-layout directory with its configs
    # and tokenizer, when the shipped SD-1.5 / SD-2.1 ones do not describe it (export/single_file.py).
    model_prediction_type: Literal["epsilon", "v_prediction"] | None = None
    model_config_dir: Path | None = None
    export_dir: Path | None = None
    model_name: str = "diffplex-shapes"  # what `GET /v1/models` lists and `model` in requests may name
    adapter_cache_bytes: int = 512 * MiB
    warmup: bool = True  # one tiny generation before /readyz says ready
    # A model that fails to load exits the process non-zero with the reason (an orchestrator shows it and
    # restarts); false keeps serving, with /livez and the model routes answering 503 and the reason.
    exit_on_load_error: bool = True
    log_level: str = "INFO"
    # "auto": human lines and a start-up banner on a terminal, JSON lines otherwise; "json" / "human" to choose
    log_format: Literal["auto", "json", "human"] = "auto"
    limits: Limits = Field(default_factory=Limits)
    fairness: FairnessSettings = Field(default_factory=FairnessSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)

    def public_base_url(self) -> str:
        """The origin clients reach this service at, for URLs the service hands out."""
        if self.http.public_base_url:
            return self.http.public_base_url.rstrip("/")
        host = "localhost" if self.host in ("", "0.0.0.0", "::") else self.host  # all interfaces: this machine
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"
