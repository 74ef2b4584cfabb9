"""`diffplex adapters train {lora,ti,vpt}` and `diffplex adapters eval`: argument parsing, logging, reports.

Bad input (arguments, image folders, captions, model directories) exits with code 2 and one line saying
what to change; everything a run did goes to a log file beside the adapter (`FILE.log`). The arguments are
parsed (`adapters/training/options.py`) before torch and the trainers are imported, so `--help` answers at once.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from adapters.errors import AdapterError
from adapters.training.options import eval_parser, train_parser

EXIT_BAD_INPUT = 2
log = logging.getLogger("adapters.training")  # adapters.training.loop logs the run here


def _logged(log_path: Path | None) -> logging.Handler | None:
    log.setLevel(logging.INFO)
    if log_path is None:
        return None
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    return handler


def main(command: str, argv: list[str]) -> int:
    """Run `train` or `eval`; 0 on success, 2 on bad input (argparse exits 2 by itself)."""
    args = (train_parser() if command == "train" else eval_parser()).parse_args(argv)
    handler = _logged(Path(f"{args.out}.log") if command == "train" and args.out.parent.is_dir() else None)
    started = time.time()
    try:
        from adapters.training.run import run_eval, run_train  # torch and the trainers: after parsing

        report = run_train(args) if command == "train" else run_eval(args)
    except (AdapterError, FileNotFoundError) as error:
        if handler is not None:
            log.error("error: %s", error)
        print(f"diffplex adapters {command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
    report["wall_seconds"] = time.time() - started
    text = json.dumps(report, indent=2, default=str)
    if command == "eval" and args.json:
        args.json.write_text(text + "\n")
    if command == "train":
        with Path(f"{args.out}.log").open("a") as log_file:
            log_file.write(f"report {json.dumps(report, default=str)}\n")
    print(text)
    return 0
