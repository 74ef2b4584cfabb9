"""Seeded random graph inputs with random adapter banks: the tracer's example and the parity checks' probe."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adapters.packing import ADAPTER_SLOT, RANK_AXIS
from export.graphs import TensorSpec


@dataclass(frozen=True)
class Dims:
    """Values for the symbolic axes of the graph contract."""

    rows: int
    slots: int
    height: int
    width: int
    context: int
    vae_scale_factor: int
    rank: int = 4  # the LoRA banks' rank in this call (RANK_AXIS); a fixed-rank graph's banks keep their own

    def resolve(self, spec: TensorSpec) -> list[int]:
        named = {
            "rows": self.rows,
            "slots": self.slots,
            RANK_AXIS: self.rank,
            "height": self.height,
            "width": self.width,
            "context": self.context,
            "image_height": self.height * self.vae_scale_factor,
            "image_width": self.width * self.vae_scale_factor,
        }
        return [named[d] if isinstance(d, str) else d for d in spec.shape]


def random_inputs(
    inputs: list[TensorSpec], dims: Dims, seed: int, bank_scale: float = 0.05, slot_rows: list[int] | None = None
) -> list[torch.Tensor]:
    """One tensor per input. Slot 0 of every bank is zero ("no adapter"); other slots are random, their
    VPT masks keep a random prefix of tokens; rows point at random slots unless `slot_rows` pins them."""
    g = torch.Generator().manual_seed(seed)
    values = []
    for spec in inputs:
        shape = dims.resolve(spec)
        name = spec.name
        if name == ADAPTER_SLOT:
            value = (
                torch.tensor(slot_rows, dtype=torch.int64)
                if slot_rows is not None
                else torch.randint(0, dims.slots, (dims.rows,), generator=g)
            )
        elif name == "eos_index":  # SDXL's second encoder pools at each row's EOS: a position after BOS
            value = torch.randint(1, dims.context, (dims.rows,), generator=g)
        elif name == "time_ids":  # SDXL's size conditioning, in pixels
            value = torch.randint(0, 1025, tuple(shape), generator=g).float()
        elif name == "timestep":
            value = torch.randint(1, 1000, (dims.rows,), generator=g).float()
        elif name == "guidance_scale":
            value = 1.0 + 9.0 * torch.rand(dims.rows, generator=g)
        elif name.startswith("vpt_mask."):
            kept = torch.randint(1, shape[1] + 1, (shape[0],), generator=g)
            value = (torch.arange(shape[1])[None, :] < kept[:, None]).float()
            value[0] = 0
        elif name.startswith(("lora_a.", "lora_b.", "vpt.")):
            value = bank_scale * torch.randn(shape, generator=g)
            if name.startswith("vpt."):
                value = value / bank_scale  # prompt tokens live at the scale of hidden states
            value[0] = 0
        elif name == "image":
            value = torch.rand(shape, generator=g) * 2 - 1
        else:
            value = torch.randn(shape, generator=g)
        values.append(value.to(torch.int64 if spec.dtype == "int64" else torch.float32))
    return values
