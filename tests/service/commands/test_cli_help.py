"""`diffplex COMMAND --help` answers without loading torch and friends, and every option it lists says what it does.

A command module parses its arguments before it imports its implementation: `--help`, or a mistyped option, then
answers at once instead of after seconds of torch / diffusers imports. Each command line runs in a fresh interpreter,
so what it imported is what `--help` costs; nothing here reads a clock.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

import pytest

from adapters.cli import SUBCOMMANDS as ADAPTER_COMMANDS
from service.bench.cli import SUITES
from service.commands import cli

HEAVY = ("torch", "diffusers", "transformers", "onnx", "onnxruntime")

# Below the commands themselves (cli.COMMANDS, every one of them checked): their subcommands.
SUBCOMMANDS = [
    *(["adapters", name] for name in ADAPTER_COMMANDS),
    *(["adapters", "train", kind] for kind in ["lora", "ti", "vpt"]),
    *(["bench", suite] for suite in ["engine", *SUITES, "all"]),
    *(["tenants", action] for action in ["create", "list", "delete"]),
    ["loadtest", "compare"],
]
COMMAND_LINES = [[name] for name in cli.COMMANDS] + SUBCOMMANDS


LINES = [pytest.param(argv, id=" ".join(argv)) for argv in COMMAND_LINES]


# Runs `diffplex ARGV --help` in this fresh interpreter, then names the heavy modules it imported.
PROBE = """
import sys
from service.commands.cli import main
try:
    status = main({argv!r} + ["--help"])
except SystemExit as exit:
    status = exit.code
heavy = sorted(name for name in {heavy!r} if name in sys.modules)
if status not in (0, None) or heavy:
    sys.exit(f"exit status {{status}}; imported {{heavy}}")
"""


@pytest.mark.parametrize("argv", LINES)
def test_help_imports_no_torch_diffusers_transformers_or_onnx(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: diffplex " + argv[0]), done.stdout[:200]


def _parsers(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> list[argparse.ArgumentParser]:
    """Every parser `diffplex ARGV --help` parses with on its way to the help: the command's own, a subcommand's."""
    seen: list[argparse.ArgumentParser] = []
    parse = argparse.ArgumentParser.parse_known_args

    def record(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> object:
        seen.append(self)
        return parse(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", record)
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)  # main sets it; this puts it back after the test
    try:
        status = cli.main([*argv, "--help"])  # `diffplex adapters --help` prints its own usage and returns
    except SystemExit as exit:
        status = exit.code
    assert status in (0, None)
    return seen


def _actions(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    """Every argument of `parser` and of its subcommands' parsers, named as a user types it."""
    for action in parser._actions:
        name = "/".join(action.option_strings) or action.dest
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:  # each subcommand's line in the listing
                yield f"{parser.prog} {choice.dest}", choice
            for sub in action.choices.values():
                yield from _actions(sub)
        else:
            yield f"{parser.prog} {name}", action


@pytest.mark.parametrize("argv", LINES)
def test_every_option_has_help(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    silent = [
        name
        for parser in _parsers(argv, monkeypatch)
        for name, action in _actions(parser)
        if action.help != argparse.SUPPRESS and not (action.help or "").strip()
    ]
    assert not silent, f"options without help: {silent}"
