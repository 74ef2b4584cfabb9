"""BENCHMARKS.md sections owned by a bench command: replaced whole on each run, the rest left alone."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(with_torch: bool = True) -> str:
    """One line naming where figures came from (CPU model and count, GPU if any). `with_torch=False` keeps
    torch out of clients that only measure over HTTP (`diffplex loadtest`)."""
    head = f"{platform.machine()} Linux, {cpu_model()}, {os.cpu_count()} CPU cores"
    if not with_torch:
        return head
    import torch  # lazily: see above

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{head}, {gpu}, torch {torch.__version__}"


def shown_path(path: Path) -> str:
    """`path` relative to the working directory when it is under it: reports name files as a reader finds them."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def update_section(path: Path, name: str, markdown: str) -> None:
    """Put `markdown` between `<!-- bench:name -->` markers, appending the section the first time."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
