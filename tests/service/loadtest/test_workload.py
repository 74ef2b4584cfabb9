from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from service.loadtest import RequestMix, WorkloadError, load_workload, parse_workload
from service.loadtest.cli import main

ROOT = Path(__file__).resolve().parents[3]

GOOD = {
    "name": "mixed",
    "seed": 3,
    "tenants": [
        {"name": "acme", "weight": 3, "adapters": [{"name": "striped", "file": "a.safetensors", "kind": "lora"}]},
        {"name": "globex", "key_env": "GLOBEX_KEY"},
    ],
    "requests": [
        {"name": "plain", "weight": 2, "prompts": ["a red circle", "a blue square"], "steps": 4, "size": "64x64"},
        {
            "name": "lora",
            "tenants": ["acme"],
            "prompt": "a green star",
            "sampler": "euler",
            "guidance_scale": 7.5,
            "adapters": [{"name": "striped", "weight": 0.8}],
        },
    ],
}


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "a.safetensors").write_bytes(b"not parsed client-side")
    return tmp_path


def _with(**changes: object) -> dict:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value
    return data


def _error(data: object, base: Path) -> str:
    with pytest.raises(WorkloadError) as info:
        parse_workload(data, base, "w.yaml")
    return str(info.value)


def test_a_good_file_parses_with_absolute_adapter_paths(base: Path) -> None:
    path = base / "w.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    workload = load_workload(path)
    assert [t.name for t in workload.tenants] == ["acme", "globex"]
    assert workload.tenants[0].adapters[0].file == (base / "a.safetensors").resolve()
    assert workload.tenants[0].key_variable == "DIFFPLEX_KEY_ACME"
    assert workload.tenants[1].key_variable == "GLOBEX_KEY"
    assert [name for name, _ in workload.entries_for("globex")] == ["plain"]
    assert [name for name, _ in workload.entries_for("acme")] == ["plain", "lora"]


def test_bodies_carry_only_the_fields_set(base: Path) -> None:
    workload = parse_workload(GOOD, base)
    body = workload.requests[1].body("a green star", seed=5)
    assert body == {
        "prompt": "a green star",
        "seed": 5,
        "n": 1,
        "sampler": "euler",
        "guidance_scale": 7.5,
        "response_format": "b64_json",
        "adapters": [{"name": "striped", "weight": 0.8}],
    }


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"requests__0__stepz": 4}, "requests[0].stepz: Extra inputs are not permitted"),
        ({"requests__0__steps": 0}, "requests[0].steps: Input should be greater than or equal to 1"),
        ({"tenants__0__weight": -1}, "tenants[0].weight: Input should be greater than 0"),
        ({"requests__1__size": "big"}, "requests[1].size: Value error, 'big' is not WIDTHxHEIGHT"),
        ({"requests__0__prompt": "x"}, "requests[0]: Value error, give either `prompt`"),
        ({"requests__1__adapters": [{"name": "nope"}]}, "requests[1].adapters[0].name: adapter 'nope' is not declared"),
        ({"requests__1__tenants": ["acme", "initech"]}, "requests[1].tenants[1]: 'initech' is not one of the tenants"),
        ({"tenants__0__adapters__0__file": "missing.safetensors"}, "tenants[0].adapters[0].file: "),
        ({"requests__0__tenants": ["acme"]}, "tenants[1]: no entry of `requests` may be sent by 'globex'"),
        ({"tenants": []}, "tenants: List should have at least 1 item"),
    ],
)
def test_bad_files_name_the_field(base: Path, changes: dict, expected: str) -> None:
    assert expected in _error(_with(**changes), base)


def test_an_adapter_used_by_all_tenants_must_be_declared_by_each(base: Path) -> None:
    data = _with(requests__1__tenants=None)
    assert "not declared by tenant(s) globex" in _error(data, base)


def test_every_problem_is_listed_at_once(base: Path) -> None:
    message = _error(_with(requests__0__steps=0, tenants__0__weight=0), base)
    assert "requests[0].steps" in message and "tenants[0].weight" in message


def test_not_a_mapping_and_bad_yaml(tmp_path: Path) -> None:
    assert "must be a YAML mapping" in _error(["a", "list"], tmp_path)
    path = tmp_path / "broken.yaml"
    path.write_text("tenants: [unclosed")
    with pytest.raises(WorkloadError, match="is not valid YAML"):
        load_workload(path)
    with pytest.raises(WorkloadError, match="cannot read the workload file"):
        load_workload(tmp_path / "absent.yaml")


def test_the_cli_exits_2_with_the_field_path(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = base / "bad.yaml"
    path.write_text(yaml.safe_dump(_with(requests__0__steps="many")))
    assert main(["--url", "http://127.0.0.1:9", "--workload", str(path), "--rate", "1"]) == 2
    assert "requests[0].steps" in capsys.readouterr().err


def test_the_shipped_example_parses() -> None:
    workload = load_workload(ROOT / "deploy/loadtest/two-tenants.yaml", check_files=False)
    assert {t.name for t in workload.tenants} == {"acme", "globex"}


def test_draws_are_deterministic_and_follow_the_weights(base: Path) -> None:
    workload = parse_workload(GOOD, base)
    first, again, other = RequestMix(workload, 7), RequestMix(workload, 7), RequestMix(workload, 8)
    a, b, c = ([m.draw() for _ in range(20)] for m in (first, again, other))
    assert a == b and a != c
    mix = RequestMix(workload, 0)
    draws = [mix.draw() for _ in range(4000)]
    acme = [d for d in draws if d.tenant == "acme"]
    assert abs(len(acme) / len(draws) - 0.75) < 0.03  # tenant weights 3 : 1
    assert abs(sum(d.entry == "plain" for d in acme) / len(acme) - 2 / 3) < 0.04  # entry weights 2 : 1
    assert all(d.entry == "plain" for d in draws if d.tenant == "globex")
    assert {d.body["prompt"] for d in draws if d.entry == "plain"} == {"a red circle", "a blue square"}
