"""Run a transformers CLIP text encoder from `inputs_embeds` (its forward only takes `input_ids`).

The same steps as `CLIPTextTransformer.forward`: embeddings (adding positions), causal mask, encoder,
final layer norm. The graph contract's text encoder takes `inputs_embeds`; this is its PyTorch reference.
"""

from __future__ import annotations

import torch
from torch import nn


def encode_inputs_embeds(text_encoder: nn.Module, inputs_embeds: torch.Tensor) -> torch.Tensor:
    """`inputs_embeds` [N, L, D] (token embeddings) -> `last_hidden_state` [N, L, D]."""
    from transformers.masking_utils import create_causal_mask

    model = getattr(text_encoder, "text_model", text_encoder)  # transformers < 5 wraps the transformer
    hidden = model.embeddings(inputs_embeds=inputs_embeds)
    mask = create_causal_mask(config=model.config, inputs_embeds=hidden, attention_mask=None, past_key_values=None)
    out = model.encoder(inputs_embeds=hidden, attention_mask=mask, is_causal=True)
    return model.final_layer_norm(out.last_hidden_state)
