"""Figures a reliability test measured (cases tried, faults, RSS, p99...), printed and kept as JSON under
`.work/reliability/` so RELIABILITY.md can quote the last run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

OUT_DIR = Path(os.environ.get("DIFFPLEX_RELIABILITY_OUT", ".work/reliability"))


def record(name: str, **figures: Any) -> None:
    print(f"\n[reliability] {name}: {json.dumps(figures, sort_keys=True)}")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
