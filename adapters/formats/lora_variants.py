"""LoRA variants the banks cannot apply exactly, refused as a whole before any key is renamed.

The banks hold a plain low-rank update `B A` per linear (or 1x1-conv) module. LyCORIS LoHa (`hada_*`: a
Hadamard product of two low-rank products), LoKr (`lokr_*`: a Kronecker product) and DoRA (`dora_scale`,
peft's `lora_magnitude_vector`: a per-column renormalization of `W + B A`) are other functions of the
weights, and LoCon's 3x3 conv layers would need bank inputs on the resnet convs that the exported graphs do
not have. Applying the rest of such a file would silently be another adapter than the one trained, so the
whole file is refused, naming the modules and what is supported.
"""

from __future__ import annotations

from collections.abc import Iterable

from adapters.errors import AdapterError, listing

# what the banks apply; every refusal below ends with it
SUPPORTED = (
    "diffplex applies plain LoRA (kohya lora_down / lora_up, peft lora_A / lora_B) on linear and 1x1-conv "
    "layers (attention, feed-forward, proj_in / proj_out, text-encoder layers)"
)
# (what a tensor name's last part starts with or is) -> the variant it belongs to
VARIANT_PARTS = {
    "hada_": "LyCORIS LoHa",
    "lokr_": "LyCORIS LoKr",
    "dora_scale": "DoRA",
    "lora_magnitude_vector": "DoRA",
}
# how each variant is turned into a plain LoRA (or not): the step the uploader can take
REMEDY = {
    "LyCORIS LoHa": "retrain it as a plain LoRA (LyCORIS algo=lora), or extract a LoRA from the merged weights",
    "LyCORIS LoKr": "retrain it as a plain LoRA (LyCORIS algo=lora), or extract a LoRA from the merged weights",
    "DoRA": "retrain without DoRA (peft use_dora=False, kohya without dora_wd)",
}


def variant_of(key: str) -> str | None:
    """The variant a tensor name belongs to: `<module>.hada_w1_a` is LoHa, `<module>.lora_magnitude_vector` DoRA
    (peft may append `.weight` / an adapter name, so every dotted part is looked at, not only the last)."""
    for part in key.split("."):
        for start, variant in VARIANT_PARTS.items():
            if part.startswith(start):
                return variant
    return None


def has_variant_keys(keys: Iterable[str]) -> bool:
    return any(variant_of(k) for k in keys)


def refuse_variants(keys: Iterable[str]) -> None:
    """Raise AdapterError naming the modules of every LoHa / LoKr / DoRA tensor in the file, if there is one."""
    modules: dict[str, set[str]] = {}
    for key in keys:
        if variant := variant_of(key):
            modules.setdefault(variant, set()).add(module_of(key))
    if not modules:
        return
    parts = [
        f"{variant} layers on {len(names)} module(s): {listing(sorted(names))}" for variant, names in modules.items()
    ]
    remedies = "; ".join(dict.fromkeys(REMEDY[v] for v in modules))
    raise AdapterError(f"{'; '.join(parts)}. These are not supported: {SUPPORTED}. Nothing was applied: {remedies}")


def refuse_conv(layers: list[str]) -> None:
    """`layers`: "<module> (<shapes>)" of every LoRA layer on a conv larger than 1x1 (LoCon); none: no error."""
    if layers:
        raise AdapterError(
            f"LoCon conv layers ({len(layers)}: {listing(layers)}) are not supported yet (applying them exactly "
            f"needs bank inputs on the convs, which the exported graphs do not have): {SUPPORTED}. Nothing was "
            "applied: use a LoRA without conv layers (kohya: train without conv_dim)"
        )


def module_of(key: str) -> str:
    """`lora_unet_x.hada_w1_a` -> `lora_unet_x`; `unet.a.b.lora_magnitude_vector.weight` -> `unet.a.b`."""
    parts = key.split(".")
    first = next(i for i, p in enumerate(parts) if any(p.startswith(s) for s in VARIANT_PARTS))
    return ".".join(parts[:first]) or key
