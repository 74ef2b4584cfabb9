"""The command lines of the shapes world's recipes: `diffplex train-backbone`, `train-judge` and `eval`.

Each module parses its arguments before it imports its recipe, so `--help` (and a mistyped option) answers at
once rather than after torch and diffusers have loaded.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path


def docstring(module: str) -> str | None:
    """`module`'s docstring, read from its source without running it (running it would load torch)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    return ast.get_docstring(ast.parse(Path(spec.origin).read_text()), clean=False)
