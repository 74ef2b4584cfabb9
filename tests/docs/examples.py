"""The examples of README.md and service/README.md as a user would type them: their command lines and Python
blocks, run in a mirror of the repository against `make serve`'s server on the embedded model.

The only rewrites are the ones a reader makes too: the documented address 127.0.0.1:8000 becomes the test
server's (a free port, so a developer's own server is left alone) and the key placeholder `dpx_...` becomes
the key the example's own `diffplex tenants create` printed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.docs.markdown import fenced_blocks
from tests.service.api.server import Server

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "service/README.md")
SHELL = ("sh", "bash")
DOCUMENTED_ADDRESS = "127.0.0.1:8000"
KEY_PLACEHOLDER = "dpx_..."
PRINTED_KEY = re.compile(r'"api_key": "(dpx_[^"]+)"')
# Lines that start a server: the one the test started stands for them (it is what `make serve` runs).
SERVER_LINES = ("make serve", "diffplex serve")
# Lines not run at all, with why. A new example is run unless it is named here, and the test asserts this list.
SKIPPED = {"make test": "the test run itself"}


@dataclass(frozen=True)
class Example:
    document: str
    kind: str  # "shell": one command line; "python": a whole block
    text: str
    line: int  # of its fence in the document


def strip_comment(line: str) -> str:
    """The line without its `# comment`: a `#` outside quotes at the start of a word, as bash reads it."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def command_lines(block: str) -> list[str]:
    """A shell block's commands: backslash continuations joined (removed, as bash does), comments and blank lines
    dropped."""
    joined = block.replace("\\\n", "")
    return [command.strip() for line in joined.splitlines() if (command := strip_comment(line))]


def examples(document: str) -> list[Example]:
    found = []
    for block in fenced_blocks((ROOT / document).read_text()):
        if block.lang in SHELL:
            found += [Example(document, "shell", line, block.line) for line in command_lines(block.text)]
        elif block.lang == "python":
            found.append(Example(document, "python", block.text, block.line))
    return found


def not_run(example: Example) -> str | None:
    """Why the test does not run this example itself; None when it does."""
    if example.kind != "shell":
        return None
    if example.text in SERVER_LINES:
        return "served by the test's own server"
    return SKIPPED.get(example.text)


def rewrite(text: str, port: int, key: str | None) -> str:
    if KEY_PLACEHOLDER in text and key is None:
        raise AssertionError(f"the example uses {KEY_PLACEHOLDER} before any `diffplex tenants create` printed a key")
    return text.replace(DOCUMENTED_ADDRESS, f"127.0.0.1:{port}").replace(KEY_PLACEHOLDER, key or KEY_PLACEHOLDER)


def printed_key(output: str) -> str | None:
    match = PRINTED_KEY.search(output)
    return match[1] if match else None


def mirror(root: Path) -> Path:
    """A directory that reads as a fresh checkout: every top-level entry of the repository linked in, but its own
    .work/ (the server's data, the examples' outputs) and a copy of deploy/, where an example writes the load
    test's adapters (git-ignored in the repository, but not to be left in it)."""
    workdir = root / "repo"
    workdir.mkdir()
    for entry in ROOT.iterdir():
        if entry.name == "deploy":
            shutil.copytree(entry, workdir / entry.name, ignore=generated_adapters)
        elif entry.name != ".work":
            (workdir / entry.name).symlink_to(entry)
    return workdir


def generated_adapters(folder: str, names: list[str]) -> set[str]:
    """A developer's generated deploy/loadtest/adapters/ is left out: the example must make its own."""
    return {"adapters"} & set(names) if Path(folder).name == "loadtest" else set()


class MakeServe(Server):
    """`make serve`'s server, `.venv/bin/diffplex serve` in the mirror with every default (the shipped adapters
    need the default LoRA rank and VPT tokens, the examples the generated admin key file) and the environment's
    DIFFPLEX_PORT. Server's own start pins the tiny test backbone's settings; its readiness wait, logs and stop
    are what is reused."""

    def __init__(self, workdir: Path, env: dict[str, str], log_path: Path) -> None:
        self.port = int(env["DIFFPLEX_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [str(workdir / ".venv/bin/diffplex"), "serve"],
            cwd=workdir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
