"""`diffplex adapters COMMAND`: adapter tooling. `train` fits an adapter on the frozen backbone, `eval` scores one,
`convert-vpt` brings a format-1 VPT file to the format served now.

The training code is imported only when a command runs, so `diffplex adapters --help` stays fast.
"""

from __future__ import annotations

import sys

SUBCOMMANDS = {
    "train": "train a LoRA, textual inversion (ti) or VPT adapter: diffplex adapters train {lora,ti,vpt} ...",
    "eval": "score an adapter with the judge: diffplex adapters eval --kind ... --file FILE --concept NAME",
    "convert-vpt": "convert a format-1 VPT file: diffplex adapters convert-vpt --file IN --out OUT [--model DIR]",
}
USAGE = (
    "usage: diffplex adapters {"
    + ",".join(SUBCOMMANDS)
    + "} ...\n\n"
    + "\n".join(f"  {name:<11} {text}" for name, text in SUBCOMMANDS.items())
)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] not in SUBCOMMANDS:
        print(f"{USAGE}\n\ndiffplex adapters: error: unknown command {argv[0]!r}", file=sys.stderr)
        return 2
    if argv[0] == "convert-vpt":
        from adapters.convert_vpt import main as convert

        return convert(argv[1:])
    from adapters.training.cli import main as run

    return run(argv[0], argv[1:])
