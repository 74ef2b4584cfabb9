"""Install banked LoRA modules and VPT processors into a U-Net / text encoder in place, and run with banks.

Components are `adapters.spec.COMPONENTS`: "unet", "text_encoder" and SDXL's "text_encoder_2" (a
`CLIPTextModelWithProjection`, its targets under `text_model.`).

    banked = install_banked(unet, spec, "unet")
    packed = pack_banks(row_sets, spec, R, P)
    with banked.activate(packed.unet, packed.adapter_slot):
        noise = unet(sample, t, encoder_hidden_states).sample

Frozen weights are shared, not copied; `remove()` puts the original modules and processors back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from adapters.banked import BankedLoRA, BankState, VPTAttnProcessor
from adapters.errors import AdapterError
from adapters.packing import lora_a_name, lora_b_name, vpt_mask_name, vpt_name
from adapters.spec import COMPONENTS, BackboneSpec, LoRATarget


class BankedModel:
    def __init__(self, model: nn.Module, component: str, state: BankState, required: list[str]) -> None:
        self.model, self.component, self.state = model, component, state
        self._required = required
        self._undo: list[Callable[[], None]] = []

    @contextmanager
    def activate(self, banks: Mapping[str, torch.Tensor], adapter_slot: torch.Tensor) -> Iterator[None]:
        """Run the model with `banks` (this component's graph inputs) and one slot per batch row."""
        if missing := [name for name in self._required if name not in banks]:
            raise AdapterError(f"{self.component} banks lack {', '.join(missing[:4])}: pack them with this spec")
        self.state.banks, self.state.slot = banks, adapter_slot.to(torch.int64)
        try:
            yield
        finally:
            self.state.banks, self.state.slot = None, None

    def remove(self) -> None:
        while self._undo:
            self._undo.pop()()


def install_banked(model: nn.Module, spec: BackboneSpec, component: str) -> BankedModel:
    """Swap every LoRA target of `component` (and, for the U-Net, every attn1 processor) for a banked one."""
    if component not in COMPONENTS:
        raise AdapterError(f"unknown component {component!r}: one of {', '.join(COMPONENTS)}")
    if component == "text_encoder_2" and not spec.has_text_encoder_2:
        raise AdapterError("the spec has no second text encoder: it was built for a one-encoder (SD-1.x/2.x) backbone")
    if any(isinstance(m, BankedLoRA) for m in model.modules()):
        raise AdapterError(f"banked modules are already installed in this {component}")
    state = BankState()
    targets = spec.targets(component)
    required = [name for i in range(len(targets)) for name in (lora_a_name(i), lora_b_name(i))]
    if component == "unet":
        required += [name for j in range(len(spec.vpt_blocks)) for name in (vpt_name(j), vpt_mask_name(j))]
    banked = BankedModel(model, component, state, required)
    for i, target in enumerate(targets):
        parent, attr, base = _locate(model, component, target.name)
        _check_matches(base, target)
        setattr(parent, attr, BankedLoRA(base, i, state))
        banked._undo.append(lambda parent=parent, attr=attr, base=base: setattr(parent, attr, base))
    if component == "unet":
        for j, block_spec in enumerate(spec.vpt_blocks):
            block = locate_module(model, component, block_spec.name)
            original = block.attn1.processor
            block.attn1.set_processor(VPTAttnProcessor(original, j, state))
            banked._undo.append(lambda attn=block.attn1, original=original: attn.set_processor(original))
    return banked


def locate_module(model: nn.Module, component: str, canonical: str) -> nn.Module:
    """The module a canonical name (`adapters.spec`) names in `model`."""
    return _locate(model, component, canonical)[2]


def vpt_block_norms(unet: nn.Module, spec: BackboneSpec, count: int) -> list[nn.Module]:
    """norm1 of the U-Net's first `count` VPT blocks: what maps a token before norm1 to one in attn1's input."""
    return [locate_module(unet, "unet", block.name).norm1 for block in spec.vpt_blocks[:count]]


def _locate(model: nn.Module, component: str, canonical: str) -> tuple[nn.Module, str, nn.Module]:
    """canonical name -> (parent module, attribute, module); tries transformers' `text_model.` wrapper too."""
    path = canonical.removeprefix(f"{component}.")
    for candidate in (path, f"text_model.{path}"):
        parent_path, _, attr = candidate.rpartition(".")
        try:
            parent = model.get_submodule(parent_path)
            return parent, attr, parent.get_submodule(attr)
        except AttributeError:
            continue
    raise AdapterError(f"{canonical} is not in this {component}: the spec was made for another backbone")


def _check_matches(module: nn.Module, target: LoRATarget) -> None:
    if isinstance(module, nn.Linear) and not target.conv1x1:
        dims = (module.in_features, module.out_features)
    elif isinstance(module, nn.Conv2d) and target.conv1x1:
        dims = (module.in_channels, module.out_channels)
    else:
        dims = None
    if dims != (target.d_in, target.d_out):
        raise AdapterError(f"{target.name} is {module!r}, not what the spec says: rebuild the spec on this backbone")
