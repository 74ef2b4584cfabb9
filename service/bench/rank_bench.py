"""`diffplex bench lora-rank`: what the LoRA banks' rank costs a U-Net call, now that each call's banks carry the
rank bucket of its largest LoRA (adapters/lora.py `rank_bucket`) instead of one fixed R.

One plain U-Net call of `--rows` rows (8) on the model given (the shipped backbone by default), on the ONNX Runtime
backend (its export; a call with LoRA rows runs the LoRA-only graph) and on the PyTorch backend (the reference
modules), in four cases:
- `fixed_r16`: a distinct rank-4 LoRA per row, banks packed at R = 16 (what every call carried before the rank axis);
- `per_call`: the same LoRAs, banks packed at the call's own rank (bucket 4);
- `one_rank_128`: the same but the last row's LoRA is of rank 128 (bucket 128: every slot's banks at 128);
- `no_adapters`: no row carries an adapter (ONNX Runtime: the base graph; PyTorch: the U-Net without banks).
Every runner of both backends is timed once per round, the rounds interleaved and each in a new order, so machine
noise hits all alike; the medians are compared as ratios within a backend.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from adapters.formats import load_adapter
from adapters.packing import PackedBanks, pack_banks
from adapters.types import AdapterSet
from export.graphs import UNET_PLAIN
from service.bench.adapter_files import lora_bytes
from service.bench.export_dir import ensure_export
from service.bench.report import machine, shown_path, table
from service.runtime.base import Runtime
from service.runtime.onnx_runtime import OnnxRuntime
from service.runtime.torch_runtime import TorchRuntime

OLD_RANK = 16  # the fixed R of every export before the rank axis
SMALL_RANK, LARGE_RANK = 4, 128
CASES = {
    "fixed_r16": f"a rank-{SMALL_RANK} LoRA per row, banks at the old fixed R {OLD_RANK}",
    "per_call": f"a rank-{SMALL_RANK} LoRA per row, banks at the call's rank",
    "one_rank_128": f"rank-{SMALL_RANK} LoRAs but one of rank {LARGE_RANK}, banks at the call's rank",
    "no_adapters": "no adapters (ONNX Runtime: base graph; PyTorch: U-Net without banks)",
}
BASELINE = "fixed_r16"


class _Call:
    """One U-Net call's inputs, the same in every case of a backend."""

    def __init__(self, runtime: Runtime, rows: int) -> None:
        info = runtime.info
        g = torch.Generator().manual_seed(0)
        self.runtime = runtime
        self.sample = torch.randn(rows, info.latent_channels, info.latent_size, info.latent_size, generator=g)
        self.timestep = torch.randint(1, 1000, (rows,), generator=g).float()
        # Text-encoder states of random token embeddings: the U-Net's context at its real width.
        embeds = torch.randn(rows, info.spec.max_length, info.spec.token_embedding_dim, generator=g)
        none = pack_banks([None] * rows, info.spec, info.lora_rank, info.vpt_tokens, components=("text_encoder",))
        self.cond = runtime.encode_text(embeds, none.adapter_slot, none.text_encoder)

    def run(self, packed: PackedBanks, adapter_free: bool = False) -> torch.Tensor:
        return self.runtime.unet(
            self.sample, self.timestep, self.cond, packed.adapter_slot, packed.unet, adapter_free=adapter_free
        )


def _row_sets(runtime: Runtime, rows: int) -> dict[str, list[AdapterSet | None]]:
    """Each case's adapter set per row: distinct random LoRAs on every U-Net target, read as an upload is."""
    spec = runtime.info.spec
    small = [((load_adapter(lora_bytes(spec, seed=i, rank=SMALL_RANK)), 1.0),) for i in range(rows)]
    large = ((load_adapter(lora_bytes(spec, seed=rows, rank=LARGE_RANK)), 1.0),)
    return {"small": small, "mixed": [*small[:-1], large], "none": [None] * rows}


def _runners(runtime: Runtime, rows: int) -> tuple[dict[str, Callable[[], object]], dict[str, dict]]:
    """Case -> the call to time, and case -> what its banks hold (rank, bytes)."""
    info = runtime.info
    sets = _row_sets(runtime, rows)

    def pack(row_sets: list, cap: int, fixed: bool = False) -> PackedBanks:
        return pack_banks(row_sets, info.spec, cap, info.vpt_tokens, components=("unet",), fixed_rank=fixed)

    packed = {
        "fixed_r16": pack(sets["small"], OLD_RANK, fixed=True),
        "per_call": pack(sets["small"], info.lora_rank),
        "one_rank_128": pack(sets["mixed"], info.lora_rank),
        "no_adapters": pack(sets["none"], info.lora_rank),
    }
    call = _Call(runtime, rows)
    runners: dict[str, Callable[[], object]] = {
        name: (lambda p=p: call.run(p)) for name, p in packed.items() if name != "no_adapters"
    }
    runners["no_adapters"] = _base_runner(runtime, call, packed["no_adapters"])
    banks = {name: {"rank": int(p.unet["lora_a.0"].shape[1]), "bytes": p.nbytes} for name, p in packed.items()}
    banks["no_adapters"] = {"rank": 0, "bytes": 0}
    return runners, banks


def _base_runner(runtime: Runtime, call: _Call, zero: PackedBanks) -> Callable[[], object]:
    """The adapter-free call as each backend serves it best: ONNX Runtime's base graph; the PyTorch U-Net module
    without banks (the reference backend runs every engine call banked, `adapter_free` or not)."""
    if isinstance(runtime, TorchRuntime):
        module = runtime.modules.get(UNET_PLAIN)

        def plain() -> torch.Tensor:
            with torch.inference_mode():
                return module(call.sample, call.timestep, call.cond)

        return plain
    return lambda: call.run(zero, adapter_free=True)


def _medians(runners: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    for run in runners.values():  # warm-up: allocations, ORT's first run at each shape
        run()
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    shuffle = random.Random(0)
    for _ in range(rounds):
        shuffle.shuffle(order)  # a new order each round: no runner always follows the same one
        for name in order:
            started = time.perf_counter()
            runners[name]()
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(s) for name, s in seconds.items()}


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> dict:
    ensure_export(args.model, args.export, progress)
    onnx = OnnxRuntime(Path(args.export), prefer_gpu=True, threads=args.threads)
    if onnx.info.lora_rank_fixed or onnx.info.lora_rank < LARGE_RANK:
        raise SystemExit(
            f"{args.export} takes LoRA banks of rank {onnx.info.lora_rank}"
            f"{' only' if onnx.info.lora_rank_fixed else ' at most'}: a rank-{LARGE_RANK} LoRA cannot run on it; "
            "delete it (the suite exports the model again) or give --export another directory"
        )
    backends: dict[str, Runtime] = {"onnxruntime": onnx, "pytorch": TorchRuntime(Path(args.model))}
    runners: dict[str, Callable[[], object]] = {}
    banks: dict[str, dict] = {}
    for backend, runtime in backends.items():
        progress(f"{backend}: packing the cases' banks")
        cases, held = _runners(runtime, args.rows)
        runners |= {f"{backend}/{case}": run for case, run in cases.items()}
        banks |= {f"{backend}/{case}": h for case, h in held.items()}
    progress(f"timing {len(runners)} runners, {args.rounds} interleaved rounds")
    median = _medians(runners, args.rounds)
    results: dict = {
        "machine": machine(),
        "model": shown_path(args.model),
        "rows": args.rows,
        "rounds": args.rounds,
        "threads": args.threads or torch.get_num_threads(),
        "runtimes": {backend: runtime.name for backend, runtime in backends.items()},
        "cases": {},
    }
    for backend in backends:
        base = median[f"{backend}/{BASELINE}"]
        free = median[f"{backend}/no_adapters"]
        results["cases"][backend] = {
            case: {
                "seconds": median[f"{backend}/{case}"],
                "vs_fixed_r16": base / median[f"{backend}/{case}"],
                "vs_no_adapters": free / median[f"{backend}/{case}"],
                **banks[f"{backend}/{case}"],
            }
            for case in CASES
        }
    return results


def markdown(r: dict, command: str) -> str:
    rows = []
    for backend, cases in r["cases"].items():
        for case, c in cases.items():
            rows.append(
                [
                    r["runtimes"][backend],
                    CASES[case],
                    c["rank"] or "-",
                    f"{c['bytes'] / (1 << 20):.1f}" if c["bytes"] else "-",
                    f"{1000 * c['seconds']:.1f}",
                    f"{c['vs_fixed_r16']:.2f}x",
                    f"{c['vs_no_adapters']:.2f}x",
                ]
            )
    header = ["backend", f"call of {r['rows']} rows", "bank rank", "U-Net banks MiB", "ms", "speed vs R 16", "vs none"]
    return "\n".join(
        [
            "## LoRA rank per call (`diffplex bench lora-rank`)",
            "",
            f"Machine: {r['machine']}; {r['threads']} threads. One plain U-Net call of {r['rows']} rows on "
            f"`{r['model']}`, each row its own random LoRA on every U-Net target (the ONNX Runtime call runs the "
            "LoRA-only graph); median of "
            f"{r['rounds']} rounds, every runner of both backends once per round in a new order. Speed ratios are "
            f"within a backend (> 1: faster). Command: `{command}`.",
            "",
            table(header, rows),
        ]
    )
