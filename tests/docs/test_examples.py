"""Every example of README.md and service/README.md runs verbatim on the embedded model: each command line with
bash (exit 0, no error answer) and each Python block with the venv's python (exit 0, an image, no warnings the
docs do not mention), in a mirror of the repository beside a real `make serve` server. Only the address and the
tenant key are rewritten (tests/docs/examples.py)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.examples import (
    DOCUMENTS,
    ROOT,
    SHELL,
    Example,
    MakeServe,
    command_lines,
    examples,
    mirror,
    not_run,
    printed_key,
    rewrite,
)
from tests.docs.markdown import fenced_blocks
from tests.service.api.server import free_port

COMMAND_TIMEOUT_S = 300
PNG = b"\x89PNG\r\n\x1a\n".hex()
# Appended to a Python block: what its `image` (an OpenAI images response) holds.
REPORT_IMAGE = """
import base64 as _base64, json as _json
print(_json.dumps({"pngs": [_base64.b64decode(_d.b64_json)[:8].hex() for _d in image.data],
                   "warnings": (image.model_extra or {}).get("warnings")}))
"""
# What the docs say their examples leave behind, in the directory they ran in.
PROMISED_FILES = {
    "README.md": [".work/demo/demo.png", ".work/loadtest/report.md", "deploy/loadtest/adapters/lora-0.safetensors"],
    "service/README.md": [".work/data/admin_key", ".work/emblem.png"],
}

Served = tuple[Path, MakeServe, dict[str, str]]


def test_the_examples_not_run_are_the_listed_ones() -> None:
    """Only the server lines (the test's server stands for them) and `make test` (this run) are not run; every
    block is of a language the test runs, so no new example is left out unnoticed."""
    blocks = [block.lang for document in DOCUMENTS for block in fenced_blocks((ROOT / document).read_text())]
    assert set(blocks) <= {*SHELL, "python"}, blocks
    every = [example for document in DOCUMENTS for example in examples(document)]
    assert {example.text: not_run(example) for example in every if not_run(example)} == {
        "make serve": "served by the test's own server",
        "make test": "the test run itself",
    }
    assert {example.kind for example in every} == {"shell", "python"}


def test_command_lines_read_as_bash_does() -> None:
    block = 'make serve   # a comment\n  # only a comment\ncurl -H "a  # b" \\\n  -F x=@y   # the end\n'
    assert command_lines(block) == ["make serve", 'curl -H "a  # b"   -F x=@y']
    assert rewrite("curl http://127.0.0.1:8000/v1 -H 'Bearer dpx_...'", 1234, "dpx_k") == (
        "curl http://127.0.0.1:1234/v1 -H 'Bearer dpx_k'"
    )
    with pytest.raises(AssertionError, match="before any `diffplex tenants create`"):
        rewrite("dpx_...", 1234, None)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("docs")
    workdir = mirror(root)
    env = {key: value for key, value in os.environ.items() if not key.startswith("DIFFPLEX_")}
    env.update(
        PATH=f"{workdir / '.venv/bin'}{os.pathsep}{env['PATH']}",  # `diffplex`, `python`: the venv's, as activated
        DIFFPLEX_PORT=str(free_port()),  # what `make serve` listens on and `make demo` calls
        OMP_NUM_THREADS="1",  # as everywhere in the suite: a second process's threads would fight for the cores
    )
    # `make demo` first makes sure of the venv: a stale one would be reinstalled under the running suite.
    stale = subprocess.run(["make", "-q", "venv"], cwd=workdir, env=env, capture_output=True)
    assert stale.returncode == 0, "the venv is older than pyproject.toml: run `make venv` before the docs test"
    server = MakeServe(workdir, env, root / "server.log")
    try:
        server.wait_ready()
        yield workdir, server, env
    finally:
        server.stop()


def run(example: Example, argv: list[str], served: Served, what: str) -> str:
    """The example's stdout, once it exited 0 in the mirror (else its output and the server's log)."""
    workdir, server, env = served
    done = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 0, (
        f"{example.document}:{example.line}: {what} exited {done.returncode}:\n"
        f"{done.stdout}\n{done.stderr}\n{server.logs()}"
    )
    return done.stdout


def run_shell(example: Example, text: str, served: Served) -> str:
    output = run(example, ["bash", "-c", text], served, f"`{text}`")
    try:
        answer = json.loads(output)
    except ValueError:
        answer = None
    error = isinstance(answer, dict) and "error" in answer  # curl exits 0 on an HTTP error
    assert not error, f"{example.document}:{example.line}: `{text}` was answered an error: {output}"
    return output


def run_python(example: Example, text: str, served: Served, script: Path) -> None:
    script.write_text(text + "\n" + REPORT_IMAGE)
    output = run(example, [str(served[0] / ".venv/bin/python"), str(script)], served, "the Python block")
    report = json.loads(output.splitlines()[-1])
    where = f"{example.document}:{example.line}: the Python block "
    assert report["pngs"] and set(report["pngs"]) == {PNG}, where + f"made no PNG: {report}"
    assert not report["warnings"], where + f"was answered warnings the docs do not mention: {report['warnings']}"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_examples_run_verbatim_on_the_embedded_model(document: str, served: Served, tmp_path: Path) -> None:
    workdir, server, _ = served
    key = None
    for example in examples(document):
        if not_run(example):
            continue
        text = rewrite(example.text, server.port, key)
        if example.kind == "shell":
            key = printed_key(run_shell(example, text, served)) or key
        else:
            run_python(example, text, served, tmp_path / f"example-{example.line}.py")
    missing = [path for path in PROMISED_FILES[document] if not (workdir / path).is_file()]
    assert not missing, f"{document}'s examples did not write {missing}"
