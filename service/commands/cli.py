"""`diffplex`: one entry point that hands each subcommand's arguments to the module that owns it.

Modules are imported only when their command runs, so `diffplex --help` stays fast and a command whose
module has not landed yet fails alone, with a clear message.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# command -> (module whose `main(argv)` runs it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train-backbone": ("models.shapes.commands.train_backbone", "train the embedded default backbone (shapes world)"),
    "train-judge": ("models.shapes.commands.train_judge", "train the judge classifier used to score image quality"),
    "eval": ("models.shapes.commands.evaluate", "score a pipeline with the judge (prompt accuracy, Frechet distance)"),
    "adapters": ("adapters.cli", "train (lora, ti, vpt) and evaluate tenant adapters on the frozen backbone"),
    "bench": ("service.bench.cli", "in-process benchmarks (engine, hot-load, memory, export, profile)"),
    "loadtest": ("service.loadtest.cli", "HTTP load test of a running server (workload file): JSON, Markdown, plots"),
    "convert": ("export.convert_cli", "convert a single-file checkpoint (.safetensors, .ckpt) to a diffusers pipeline"),
    "export": ("export.cli", "export a diffusers pipeline to ONNX (fused CFG, per-row adapter banks), TensorRT"),
    "serve": ("service.commands.serve", "run the HTTP API (OpenAI-compatible images, adapters, jobs) with uvicorn"),
    "worker": ("service.commands.worker", "run jobs from the Redis job stream (scale-out: API replicas + GPU workers)"),
    "tenants": ("service.commands.tenants", "create, list and delete tenants (API keys) in the configured store"),
    "demo": ("service.commands.demo", "try the shipped adapters on a running server: one labelled grid, curl lines"),
}


def build_parser() -> argparse.ArgumentParser:
    width = max(len(name) for name in COMMANDS)
    epilog = "commands:\n" + "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="diffplex",
        description="Multi-tenant text-to-image diffusion inference.",
        epilog=epilog + "\n\n`diffplex COMMAND --help` shows a command's own options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="one of: " + ", ".join(COMMANDS))
    # Everything after the command, --help included, belongs to the command's own parser.
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:
        parser.error("a command is required")
    args = parser.parse_args(argv)
    module_name, _ = COMMANDS[args.command]
    # transformers warns at import that torchvision is missing (there is no CPU torchvision here and nothing
    # of ours uses its image processors): one line per command, twice, that users cannot act on. A user's
    # own TRANSFORMERS_VERBOSITY still wins.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise  # a missing dependency inside the module, not the module itself
        print(f"diffplex {args.command}: {module_name} is not available in this install", file=sys.stderr)
        return 1
    saved_argv0 = sys.argv[0]
    sys.argv[0] = f"diffplex {args.command}"  # the command's own usage lines then read as typed
    try:
        result = module.main(args.args)
    finally:
        sys.argv[0] = saved_argv0
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
