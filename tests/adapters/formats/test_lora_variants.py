"""LoCon, LyCORIS LoHa / LoKr and DoRA files: refused whole, naming the modules, never applied in part."""

from __future__ import annotations

import pytest
import torch

from adapters.errors import AdapterError
from adapters.formats import load_adapter
from adapters.spec import BackboneSpec
from adapters.validate import ExportLimits, validate
from tests.adapters.builders import safetensors_bytes

# tiny-backbone modules (tests/adapters/builders.py `tiny_unet`): a linear LoRA target and 3x3 resnet convs
KQ = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
PQ = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
PROJ_IN = "lora_unet_down_blocks_0_attentions_0_proj_in"
RESNET_CONVS = [  # (kohya name, in, out) of every 3x3 resnet conv
    ("lora_unet_down_blocks_0_resnets_0_conv1", 32, 32),
    ("lora_unet_down_blocks_0_resnets_0_conv2", 32, 32),
    ("lora_unet_down_blocks_1_resnets_0_conv1", 32, 64),
    ("lora_unet_down_blocks_1_resnets_0_conv2", 64, 64),
    ("lora_unet_mid_block_resnets_0_conv1", 64, 64),
    ("lora_unet_mid_block_resnets_0_conv2", 64, 64),
    ("lora_unet_mid_block_resnets_1_conv1", 64, 64),
    ("lora_unet_mid_block_resnets_1_conv2", 64, 64),
    ("lora_unet_up_blocks_1_resnets_0_conv1", 96, 32),
    ("lora_unet_up_blocks_1_resnets_0_conv2", 32, 32),
]


def kohya_module(name: str, d_in: int, d_out: int, kernel: tuple[int, ...] = ()) -> dict[str, torch.Tensor]:
    """One kohya LoRA module of rank 2; `kernel` (3, 3) makes it a LoCon conv layer ([r, in, 3, 3], [out, r, 1, 1])."""
    up_kernel = (1, 1) if kernel else ()
    return {
        f"{name}.lora_down.weight": torch.randn(2, d_in, *kernel),
        f"{name}.lora_up.weight": torch.randn(d_out, 2, *up_kernel),
        f"{name}.alpha": torch.tensor(2.0),
    }


def plain_kohya() -> dict[str, torch.Tensor]:
    """The linear and 1x1-conv layers a LoCon file carries besides its convs: accepted alone."""
    return kohya_module(KQ, 32, 32) | kohya_module(PROJ_IN, 32, 32, (1, 1))


def locon() -> dict[str, torch.Tensor]:
    out = plain_kohya()
    for name, d_in, d_out in RESNET_CONVS:
        out |= kohya_module(name, d_in, d_out, (3, 3))
    return out


def refusal(tensors: dict[str, torch.Tensor]) -> str:
    with pytest.raises(AdapterError) as error:
        load_adapter(safetensors_bytes(tensors))
    return str(error.value)


def test_the_linear_part_of_a_locon_alone_is_applied(spec: BackboneSpec) -> None:
    adapter = load_adapter(safetensors_bytes(plain_kohya()))
    validate(adapter, spec, ExportLimits(4, 4))
    assert set(adapter.layers) == {PQ, "unet.down_blocks.0.attentions.0.proj_in"}  # type: ignore[union-attr]


def test_kohya_locon_is_refused_listing_its_conv_layers() -> None:
    message = refusal(locon())
    assert "LoCon conv layers (10: " in message
    assert "lora_unet_down_blocks_0_resnets_0_conv1 (lora_down (2, 32, 3, 3))" in message
    assert "(+2 more)" in message  # listing: the first eight, then the count
    assert "use a LoRA without conv layers" in message and "1x1-conv" in message
    assert "attn1_to_q" not in message  # the supported layers are not what is wrong


def test_peft_locon_is_refused_listing_its_conv_layers() -> None:
    conv = "unet.down_blocks.0.resnets.0.conv1"
    tensors = {
        f"{PQ}.lora_A.weight": torch.randn(2, 32),
        f"{PQ}.lora_B.weight": torch.randn(32, 2),
        f"{conv}.lora_A.weight": torch.randn(2, 32, 3, 3),
        f"{conv}.lora_B.weight": torch.randn(32, 2, 1, 1),
    }
    message = refusal(tensors)
    assert "LoCon conv layers (1: " in message and "resnets.0.conv1" in message


def loha(prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.hada_{w}": torch.randn(*shape) for w, shape in HADA.items()}


HADA = {"w1_a": (32, 2), "w1_b": (2, 32), "w2_a": (32, 2), "w2_b": (2, 32)}


@pytest.mark.parametrize(
    ("tensors", "variant", "module"),
    [
        (loha(KQ) | {f"{KQ}.alpha": torch.tensor(2.0)}, "LyCORIS LoHa", KQ),
        (loha(PQ), "LyCORIS LoHa", PQ),  # peft's layout: no LoRA marker, it was read as an embedding before
        ({f"{KQ}.lokr_w1": torch.randn(4, 4), f"{KQ}.lokr_w2": torch.randn(8, 8)}, "LyCORIS LoKr", KQ),
        ({f"{PQ}.lokr_w1": torch.randn(4, 4), f"{PQ}.lokr_w2": torch.randn(8, 8)}, "LyCORIS LoKr", PQ),
        (kohya_module(KQ, 32, 32) | {f"{KQ}.dora_scale": torch.ones(1, 32)}, "DoRA", KQ),
        (
            {
                f"{PQ}.lora_A.weight": torch.randn(2, 32),
                f"{PQ}.lora_B.weight": torch.randn(32, 2),
                f"{PQ}.lora_magnitude_vector": torch.ones(32),
            },
            "DoRA",
            PQ,
        ),
    ],
    ids=["loha-kohya", "loha-peft", "lokr-kohya", "lokr-peft", "dora-kohya", "dora-peft"],
)
def test_lycoris_and_dora_are_refused_naming_the_modules(tensors: dict, variant: str, module: str) -> None:
    message = refusal(tensors)
    assert f"{variant} layers on 1 module(s): {module}." in message
    assert "plain LoRA" in message and "Nothing was applied" in message


def test_a_lora_with_some_loha_modules_is_refused_whole() -> None:
    """A file mixing plain LoRA modules and LoHa ones is not applied as its LoRA part."""
    mid = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"
    message = refusal(plain_kohya() | loha(mid) | loha(KQ.replace("to_q", "to_k")))
    assert "LyCORIS LoHa layers on 2 module(s)" in message and mid in message
