"""Run a transformers CLIP text encoder from `inputs_embeds` (its forward only takes `input_ids`).

The same steps as `CLIPTextTransformer.forward`: embeddings (adding positions), causal mask, encoder layers,
final layer norm. The graph contract's text encoders take `inputs_embeds`; these are their PyTorch reference.
SD-1.x/2.x condition on the last layer's normed output; SDXL on the penultimate layer's (`hidden_states[-2]` in
diffusers' `encode_prompt`), plus the second encoder's pooled embedding: the final-normed state at each row's
EOS token through `text_projection`.
"""

from __future__ import annotations

import torch
from torch import nn


def _layers_run(text_encoder: nn.Module, inputs_embeds: torch.Tensor, layers: int | None) -> torch.Tensor:
    """Embeddings, then the first `layers` encoder layers (None: all) under CLIP's causal mask."""
    from transformers.masking_utils import create_causal_mask

    model = getattr(text_encoder, "text_model", text_encoder)  # transformers < 5 wraps the transformer
    hidden = model.embeddings(inputs_embeds=inputs_embeds)
    mask = create_causal_mask(config=model.config, inputs_embeds=hidden, attention_mask=None, past_key_values=None)
    for layer in model.encoder.layers[:layers]:
        hidden = layer(hidden, mask, is_causal=True)
    return hidden


def encode_inputs_embeds(text_encoder: nn.Module, inputs_embeds: torch.Tensor) -> torch.Tensor:
    """`inputs_embeds` [N, L, D] (token embeddings) -> `last_hidden_state` [N, L, D] (final-normed)."""
    model = getattr(text_encoder, "text_model", text_encoder)
    return model.final_layer_norm(_layers_run(text_encoder, inputs_embeds, None))


def encode_penultimate(text_encoder: nn.Module, inputs_embeds: torch.Tensor) -> torch.Tensor:
    """`inputs_embeds` [N, L, D] -> the penultimate layer's output [N, L, D], un-normed (SDXL's context)."""
    return _layers_run(text_encoder, inputs_embeds, -1)


def encode_penultimate_and_pooled(
    text_encoder: nn.Module, inputs_embeds: torch.Tensor, eos_index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A `CLIPTextModelWithProjection` (SDXL's second encoder): the penultimate layer's output [N, L, D] and the
    pooled embedding [N, projection_dim], taken at `eos_index` [N] (each row's EOS position)."""
    model = getattr(text_encoder, "text_model", text_encoder)
    penultimate = _layers_run(text_encoder, inputs_embeds, -1)
    from transformers.masking_utils import create_causal_mask

    mask = create_causal_mask(config=model.config, inputs_embeds=penultimate, attention_mask=None, past_key_values=None)
    last = model.final_layer_norm(model.encoder.layers[-1](penultimate, mask, is_causal=True))
    rows = torch.arange(last.shape[0], device=last.device)
    return penultimate, text_encoder.text_projection(last[rows, eos_index])
