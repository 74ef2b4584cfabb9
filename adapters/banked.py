"""PyTorch reference modules that apply slot banks per batch row (the graph contract, run eagerly).

`BankedLoRA` replaces a frozen `nn.Linear` / 1x1 `nn.Conv2d`: `y = W x + B[slot] (A[slot] x)` per row.
`VPTAttnProcessor` replaces a transformer block's attn1 processor: extra keys / values from the slot's
prompt tokens, masked per row. Both read the banks and `adapter_slot` from a shared `BankState`
that `adapters.install.BankedModel.activate` sets; with no banks set they are the base modules exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from adapters.errors import AdapterError
from adapters.packing import lora_a_name, lora_b_name, vpt_mask_name, vpt_name
from adapters.vpt import prompt_keys_values


class BankState:
    """The banks and per-row slots of the current forward pass, shared by one model's banked modules."""

    def __init__(self) -> None:
        self.banks: Mapping[str, torch.Tensor] | None = None
        self.slot: torch.Tensor | None = None  # [N] int64
        # Graph mode (export): take the banked path unconditionally, no data-dependent shortcut; slot 0's
        # zero LoRA rows add exactly 0 and its masked VPT keys get zero attention weight.
        self.graph_mode = False

    def rows(self, batch: int) -> torch.Tensor:
        assert self.slot is not None
        if self.slot.shape[0] != batch:
            raise AdapterError(f"adapter_slot has {self.slot.shape[0]} rows but the batch has {batch}")
        return self.slot

    def lora(self, i: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.banks is None:
            return None
        return self.banks[lora_a_name(i)], self.banks[lora_b_name(i)]

    def vpt(self, j: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.banks is None or vpt_name(j) not in self.banks:
            return None
        return self.banks[vpt_name(j)], self.banks[vpt_mask_name(j)]


class BankedLoRA(nn.Module):
    """A frozen linear map plus a per-row LoRA delta from bank `i`; shares the base module's parameters.

    The base weights stay registered under their own names (`weight`, `bias`), so state dicts and
    fingerprints of a model do not change when these are installed.
    """

    def __init__(self, base: nn.Linear | nn.Conv2d, index: int, state: BankState) -> None:
        super().__init__()
        self.weight = base.weight
        self.bias = base.bias
        self._base = (base,)  # a tuple, so the module is not registered (and its weights not listed) twice
        self.index = index
        self.state = state
        self.conv1x1 = isinstance(base, nn.Conv2d)

    @property
    def base(self) -> nn.Linear | nn.Conv2d:
        return self._base[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        bank = self.state.lora(self.index)
        if bank is None:
            return y
        slot = self.state.rows(x.shape[0])
        down, up = bank[0][slot].to(x.dtype), bank[1][slot].to(x.dtype)  # [N, R, d_in], [N, d_out, R]
        if self.conv1x1:  # [N, C, H, W]: the LoRA acts on channels, per pixel
            delta = torch.bmm(up, torch.bmm(down, x.flatten(2))).view_as(y)
        else:  # [N, ..., d_in]
            h = torch.bmm(x.reshape(x.shape[0], -1, x.shape[-1]), down.transpose(1, 2))
            delta = torch.bmm(h, up.transpose(1, 2)).view_as(y)
        return y + delta

    def extra_repr(self) -> str:
        return f"bank={self.index}, base={self.base!r}"


class VPTAttnProcessor:
    """attn1 processor adding a slot's prompt tokens as extra keys / values (see `adapters.vpt`).

    The prompt tokens are already in attn1's input space (after the block's norm1, `adapters.vpt`).
    Without banks, or when no row's slot has prompt tokens, it hands over to the original processor.
    """

    def __init__(self, base: Any, index: int, state: BankState) -> None:
        self.base, self.index, self.state = base, index, state

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        bank = self.state.vpt(self.index)
        if bank is not None and encoder_hidden_states is None:
            present = bank[1][self.state.rows(hidden_states.shape[0])] > 0  # [N, P]
            if self.state.graph_mode or bool(present.any()):
                if attention_mask is not None:
                    raise AdapterError("VPT prompt tokens cannot be combined with a self-attention mask")
                return self._attend(attn, hidden_states, bank[0], present, temb)
        return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)

    def _attend(
        self, attn: Any, hidden_states: torch.Tensor, prompt_bank: torch.Tensor, present: torch.Tensor, temb: Any
    ) -> torch.Tensor:
        """diffusers' AttnProcessor2_0 for self-attention, with the prompt's keys / values appended."""
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        prompt = prompt_bank[self.state.rows(batch)].to(hidden_states.dtype)  # [N, P, d]
        prompt_key, prompt_value = prompt_keys_values(attn, prompt)
        query = attn.to_q(hidden_states)
        key = torch.cat([attn.to_k(hidden_states), prompt_key], dim=1)
        value = torch.cat([attn.to_v(hidden_states), prompt_value], dim=1)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        keep = torch.cat([present.new_ones(batch, hidden_states.shape[1]), present], dim=1)[:, None, None, :]
        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=keep, dropout_p=0.0)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor
