"""ONNX Runtime backend over an export directory (`diffplex export`): CPU, or CUDA with I/O binding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from safetensors.torch import load_file

from export.graphs import TEXT_ENCODER, UNET_CFG, UNET_PLAIN, VAE_DECODER, VAE_ENCODER
from export.manifest import TOKEN_EMBEDDINGS, Manifest, load_manifest
from export.ort_session import available_providers, open_session
from service.runtime.base import BackboneInfo, Banks, Runtime


def backbone_info(export_dir: Path, manifest: Manifest) -> BackboneInfo:
    return BackboneInfo(
        spec=manifest.spec,
        lora_rank=manifest.lora_rank,
        vpt_tokens=manifest.vpt_tokens,
        latent_channels=manifest.latent_channels,
        latent_size=manifest.latent_size,
        latent_multiple=manifest.latent_multiple,
        vae_scale_factor=manifest.vae_scale_factor,
        scaling_factor=manifest.scaling_factor,
        scheduler_config=json.loads((export_dir / "scheduler" / "scheduler_config.json").read_text()),
        tokenizer_dir=export_dir / "tokenizer",
        token_embedding=load_file(export_dir / TOKEN_EMBEDDINGS)["token_embedding"],
    )


class GraphRunner:
    """One graph's session: feeds by input name, drops bank inputs the graph does not take (P = 0)."""

    def __init__(self, session: ort.InferenceSession, cuda: bool) -> None:
        self.session = session
        self.cuda = cuda
        self.inputs = [i.name for i in session.get_inputs()]
        self.output = session.get_outputs()[0].name

    def __call__(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        feed = {name: np.ascontiguousarray(tensors[name].numpy()) for name in self.inputs}
        if not self.cuda:
            return torch.from_numpy(self.session.run([self.output], feed)[0])
        # I/O binding: inputs copied to the GPU once, the output allocated there by ORT, one copy back.
        binding = self.session.io_binding()
        for name, array in feed.items():
            binding.bind_cpu_input(name, array)
        binding.bind_output(self.output, "cuda")
        self.session.run_with_iobinding(binding)
        return torch.from_numpy(binding.copy_outputs_to_cpu()[0])


class OnnxRuntime(Runtime):
    name = "onnxruntime"

    def __init__(
        self,
        export_dir: Path,
        expected_fingerprint: str | None = None,
        prefer_gpu: bool = True,
        threads: int | None = None,
        fp16: bool = False,
    ) -> None:
        export_dir = Path(export_dir)
        manifest = load_manifest(export_dir, expected_fingerprint)
        providers = available_providers(prefer_gpu)
        cuda = providers[0] == "CUDAExecutionProvider"
        self.name = "onnxruntime-cuda" if cuda else "onnxruntime-cpu"
        self.info = backbone_info(export_dir, manifest)
        self.graphs: dict[str, GraphRunner] = {}
        for graph, entry in manifest.graphs.items():
            # The portable graph, optimized by ORT at load: measured faster than the saved level-"all" file
            # (BENCHMARKS.md, export section), which only saves start-up time.
            file = entry.variants["fp16"] if fp16 and "fp16" in entry.variants else entry.file
            session = open_session(export_dir / file, providers=providers, threads=threads)
            self.graphs[graph] = GraphRunner(session, cuda)

    def encode_text(self, inputs_embeds: torch.Tensor, adapter_slot: torch.Tensor, banks: Banks) -> torch.Tensor:
        return self.graphs[TEXT_ENCODER]({"inputs_embeds": inputs_embeds, "adapter_slot": adapter_slot, **banks})

    def unet_cfg(self, sample, timestep, cond, uncond, guidance_scale, adapter_slot, banks):  # noqa: ANN001, ANN201
        return self.graphs[UNET_CFG](
            {
                "sample": sample,
                "timestep": timestep.float(),
                "encoder_hidden_states": cond,
                "uncond_hidden_states": uncond,
                "guidance_scale": guidance_scale.float(),
                "adapter_slot": adapter_slot,
                **banks,
            }
        )

    def unet(self, sample, timestep, cond, adapter_slot, banks):  # noqa: ANN001, ANN201
        return self.graphs[UNET_PLAIN](
            {
                "sample": sample,
                "timestep": timestep.float(),
                "encoder_hidden_states": cond,
                "adapter_slot": adapter_slot,
                **banks,
            }
        )

    def vae_encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.graphs[VAE_ENCODER]({"image": image})

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.graphs[VAE_DECODER]({"latent_sample": latents})
