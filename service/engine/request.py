"""One image to make: what the engine needs, already resolved (adapters parsed, tenant known)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch

from adapters.types import AdapterSet, LoRAAdapter, TextualInversion, VPTAdapter
from service.core.settings import MAX_CACHE_INTERVAL
from service.engine.errors import EngineError
from service.engine.samplers import SAMPLERS

_ids = itertools.count(1)

MAX_SIDE_FACTOR = 4  # the largest side a request may generate, in multiples of the backbone's native size
MAX_MICRO_SIZE = 16384  # SDXL's size conditioning (original / target size, crop corner): pixels, each value
TEXT_ENCODER_PREFIXES = ("text_encoder.", "text_encoder_2.")  # LoRA layers on either text encoder (SDXL has two)
XL_FIELDS = ("prompt_2", "negative_prompt_2", "original_size", "crops_coords_top_left", "target_size")


def max_side(native_size: int) -> int:
    return MAX_SIDE_FACTOR * native_size


def side_supported(side: int, native_size: int, multiple: int) -> bool:
    """Whether the model generates a side of `side` pixels: a multiple of `multiple` (BackboneInfo.size_multiple),
    from one multiple up to `max_side`."""
    return side % multiple == 0 and multiple <= side <= max_side(native_size)


@dataclass
class GenerationRequest:
    prompt: str
    seed: int
    negative_prompt: str | None = None  # None: not given ("" for SD-1.x/2.x; zeros for SDXL where its config says)
    steps: int = 25
    guidance_scale: float = 5.0
    sampler: str = "ddim"
    eta: float = 0.0
    width: int | None = None  # pixels; None = the backbone's native size
    height: int | None = None
    variation_seed: int | None = None
    variation_strength: float = 0.0
    guidance_interval: tuple[float, float] = (0.0, 1.0)  # fractions of the trajectory that get guidance
    uncond_refresh: int = 1  # recompute the unconditional prediction every k steps (1: every step)
    cache_interval: int = 1  # step caching: the full U-Net every k-th step, its shallow path between (1: off)
    adapters: AdapterSet = ()  # LoRA / VPT / TI with weights, from the tenant's namespace
    init_image: np.ndarray | None = None  # img2img: uint8 [H, W, 3]
    strength: float = 0.8
    tenant: str = ""
    # SDXL only (XL_FIELDS), as diffusers' StableDiffusionXLPipeline takes them: the second encoder's prompts
    # (default: the first ones) and the size conditioning, (height, width) / (top, left) pixels; the sizes
    # default to the generated image's, the crop corner to (0, 0).
    prompt_2: str | None = None
    negative_prompt_2: str | None = None
    original_size: tuple[int, int] | None = None
    crops_coords_top_left: tuple[int, int] = (0, 0)
    target_size: tuple[int, int] | None = None
    request_id: str = field(default_factory=lambda: f"r{next(_ids)}")
    # Set by `validate`: the (native size, multiple) it passed for, so the engine trusts a planned request
    # instead of checking it again, and the TI table it built, which the engine splices prompts with.
    _valid_for: tuple[int, int] | None = field(default=None, init=False, repr=False, compare=False)
    _ti_table: dict | None = field(default=None, init=False, repr=False, compare=False)
    _ti_table_2: dict | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1.0

    def ti_table(self) -> dict:
        """Token -> vectors of the request's embeddings; AdapterError where two define the same token."""
        if self._ti_table is None:
            from adapters.textual_inversion import ti_table

            self._ti_table = ti_table([a for a, _ in self.adapters if isinstance(a, TextualInversion)])
        return self._ti_table

    def ti_table_2(self) -> dict:
        """Token -> the second encoder's vectors (SDXL embeddings' `clip_g`), built once like `ti_table`. Called for
        SDXL models only, whose uploads refuse one-encoder embeddings (AdapterError should one get here)."""
        if self._ti_table_2 is None:
            from adapters.textual_inversion import ti_table_2

            self._ti_table_2 = ti_table_2([a for a, _ in self.adapters if isinstance(a, TextualInversion)])
        return self._ti_table_2

    def time_ids(self, native_size: int) -> torch.Tensor:
        """SDXL's added time ids [1, 6]: original size, crop top-left, target size ((height, width) pixels)."""
        size = (self.height or native_size, self.width or native_size)
        values = (*(self.original_size or size), *self.crops_coords_top_left, *(self.target_size or size))
        return torch.tensor([values], dtype=torch.float32)

    def unet_adapters(self) -> AdapterSet:
        return tuple((a, w) for a, w in self.adapters if isinstance(a, LoRAAdapter | VPTAdapter))

    def text_adapters(self) -> AdapterSet:
        """What changes the text encoders' output: TI vectors and LoRAs with text-encoder layers."""
        return tuple(
            (a, w)
            for a, w in self.adapters
            if isinstance(a, TextualInversion)
            or (isinstance(a, LoRAAdapter) and any(n.startswith(TEXT_ENCODER_PREFIXES) for n in a.layers))
        )

    def validated(self, native_size: int, multiple: int) -> bool:
        """Whether `validate` passed for these sizes (planning validates; the engine then does not again)."""
        return self._valid_for == (native_size, multiple)

    def validate(self, native_size: int, multiple: int, xl: bool = False, step_cache: bool = False) -> None:
        """EngineError naming the first field the engine cannot run as given; AdapterError for a token that two
        of its embeddings define. `xl`: the model is SDXL (the XL_FIELDS apply); `step_cache`: the backend runs the
        shallow U-Nets (`cache_interval` > 1). Call it once, after the last change to the request."""
        self._check_xl_fields(xl)
        if not 1 <= self.steps <= 500:
            raise EngineError(f"steps must be between 1 and 500, not {self.steps}")
        if self.sampler not in SAMPLERS:
            raise EngineError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if not 0.0 <= self.guidance_scale <= 50.0:
            raise EngineError(f"guidance_scale must be between 0 and 50, not {self.guidance_scale}")
        if not 0.0 <= self.eta <= 1.0:
            raise EngineError(f"eta must be between 0 and 1, not {self.eta}")
        if not 0.0 <= self.variation_strength <= 1.0:
            raise EngineError(f"variation_strength must be between 0 and 1, not {self.variation_strength}")
        lo, hi = self.guidance_interval
        if not 0.0 <= lo < hi <= 1.0:
            raise EngineError(f"guidance_interval must be [start, end] with 0 <= start < end <= 1, not {[lo, hi]}")
        if self.uncond_refresh < 1:
            raise EngineError(f"uncond_refresh must be at least 1, not {self.uncond_refresh}")
        if not 1 <= self.cache_interval <= MAX_CACHE_INTERVAL:
            raise EngineError(f"cache_interval must be between 1 and {MAX_CACHE_INTERVAL}, not {self.cache_interval}")
        if self.cache_interval > 1 and not step_cache:
            raise EngineError(
                "cache_interval > 1 needs the step-caching U-Nets, which this backend lacks (an export made before "
                "them, or the TensorRT backend): re-run diffplex export, or leave cache_interval at 1"
            )
        for name, value in (("width", self.width), ("height", self.height)):
            if value is not None and not side_supported(value, native_size, multiple):
                raise EngineError(
                    f"{name} {value} is not supported: use a multiple of {multiple} up to {max_side(native_size)}"
                )
        if self.init_image is not None:
            if not 0.0 < self.strength <= 1.0:
                raise EngineError(f"strength must be in (0, 1], not {self.strength}")
            image = self.init_image
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise EngineError("init_image must be an RGB image")
            want = (self.height or native_size, self.width or native_size)
            if image.shape[:2] != want:
                raise EngineError(
                    f"init_image is {image.shape[1]}x{image.shape[0]} but the request generates {want[1]}x{want[0]}: "
                    "resize it or set width/height to match"
                )
        self.ti_table()  # a token owned twice fails here, before anything is queued
        self._valid_for = (native_size, multiple)

    def _check_xl_fields(self, xl: bool) -> None:
        if not xl:
            if given := [name for name in XL_FIELDS if getattr(self, name) not in (None, (0, 0))]:
                raise EngineError(
                    f"{', '.join(given)} condition SDXL models only; the served model is SD-1.x/2.x-shaped: leave "
                    f"{'it' if len(given) == 1 else 'them'} out"
                )
            return
        for name in ("original_size", "crops_coords_top_left", "target_size"):
            value = getattr(self, name)
            if value is None:
                continue
            low = 0 if name == "crops_coords_top_left" else 1
            if len(value) != 2 or not all(low <= v <= MAX_MICRO_SIZE for v in value):
                raise EngineError(f"{name} must be two integers from {low} to {MAX_MICRO_SIZE}, not {list(value)}")
