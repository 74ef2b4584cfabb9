from __future__ import annotations

import os
import subprocess
import sys

import pytest

from service.commands import cli


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.commands.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_help_lists_the_commands() -> None:
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    for name in cli.COMMANDS:
        assert name in result.stdout


def test_unknown_command_exits_2_with_usage() -> None:
    result = _run("no-such-command")
    assert result.returncode == 2
    assert "usage: diffplex" in result.stderr and "no-such-command" in result.stderr


def test_no_command_exits_2() -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2


def test_arguments_after_the_command_reach_its_main(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    class FakeModule:
        @staticmethod
        def main(argv: list[str]) -> None:
            seen.append(argv)

    monkeypatch.setattr(cli.importlib, "import_module", lambda name: FakeModule)
    assert cli.main(["eval", "--help", "--steps", "3"]) == 0
    assert seen == [["--help", "--steps", "3"]]


def test_a_command_whose_module_is_missing_fails_clearly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.COMMANDS, "eval", ("models.shapes.no_such_module", "missing on purpose"))
    assert cli.main(["eval"]) == 1
    assert "models.shapes.no_such_module is not available" in capsys.readouterr().err


def test_a_command_prints_no_import_noise() -> None:
    """transformers' "torchvision is not installed" warnings would precede every command's own output."""
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_VERBOSITY"}
    done = subprocess.run(
        [sys.executable, "-m", "service.commands.cli", "export", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: diffplex export")
    assert "torchvision" not in done.stderr, done.stderr
