"""The start-up banner: where the API, playground, docs and admin key are and what to run next, as human lines
on a terminal and as fields of the JSON "ready" line otherwise."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from service.boot.banner import announce_ready, banner, ready_fields
from service.core.logs import HumanFormatter, JsonFormatter, human_output
from service.core.settings import Settings


def settings(tmp_path: Path, **overrides: object) -> Settings:
    fields: dict[str, object] = {"data_dir": tmp_path / "data", "redis_url": None, "admin_key": None, "port": 8123}
    return Settings(**(fields | overrides))


def test_the_banner_names_every_address_and_the_next_command(tmp_path: Path) -> None:
    fields = ready_fields(settings(tmp_path), "pytorch", 64)
    text = banner(fields, "all")
    assert text.splitlines()[0] == "diffplex is ready: diffplex-shapes on pytorch, native size 64x64"
    for line in (
        "API         http://127.0.0.1:8123/v1",
        "playground  http://127.0.0.1:8123/",
        "API docs    http://127.0.0.1:8123/docs",
        f"admin key   {tmp_path / 'data' / 'admin_key'}",
        "next        diffplex tenants create NAME",
    ):
        assert line in text, text
    worker = banner(ready_fields(settings(tmp_path, redis_url="redis://x"), "pytorch", 64), "worker")
    assert "playground" not in worker and "admin key" not in worker and "Redis job stream" in worker


def test_a_terminal_gets_the_banner_and_a_pipe_gets_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger("test.banner")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        announce_ready(settings(tmp_path, log_format="human"), "pytorch", 64, log)
        assert "diffplex is ready" in capsys.readouterr().err and not records
        announce_ready(settings(tmp_path, log_format="json"), "pytorch", 64, log)
        assert capsys.readouterr().err == ""
        [record] = records
        line = json.loads(JsonFormatter().format(record))
        assert line["message"] == "ready" and line["playground"] == "http://127.0.0.1:8123/"
    finally:
        log.removeHandler(handler)


def test_auto_format_follows_whether_stderr_is_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not human_output("auto") and human_output("human") and not human_output("json")
    monkeypatch.setattr("sys.stderr", Tty())
    assert human_output("auto") and not human_output("json")


def test_human_log_lines_carry_the_records_fields() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "job finished", None, None)
    record.job = "job_1"
    line = HumanFormatter().format(record)
    assert line.endswith("info    job finished  job=job_1")
