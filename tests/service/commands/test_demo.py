"""`diffplex demo` against a real server on the embedded model: a fresh tenant, the adapters of a directory
uploaded (built here for the model, as the shipped ones are), one labelled grid, a curl line per request; exit 2
with the reason for a server that is not there or an admin key it refuses. Plus the plan's pieces, unserved."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from service.commands import demo_grid
from service.commands.demo import admin_key, wait_ready
from service.commands.demo_plan import (
    AdapterFile,
    DemoError,
    curl_generate,
    find_adapters,
    load_manifest,
    meaning_of,
    plan_row,
)
from service.core.settings import DEFAULT_MODEL_DIR, Settings
from service.tenants.admin_key import FILE_NAME as ADMIN_KEY_FILE
from tests.service.api.adapter_files import lora_file, ti_file, tiny_spec, vpt_file
from tests.service.api.server import ADMIN_KEY, Server, free_port

TOKEN = "<emblem>"
PINS = {"shape": "square", "color": "purple", "fill": "outlined"}  # the report's order, not the caption's
MANIFEST = {
    "seed": 5,
    "steps": 25,
    "adapters": {
        "striped": {"prompt": "a red circle", "weight": 1},
        "night": {"prompt": "a yellow star"},  # "star": a word the model never learned, so a warning comes back
        "emblem": {"prompt": "a {token} on a white background", "words": "a {meaning} on a white background"},
        "absent": {"prompt": "a blue square"},  # no file: skipped with a line
    },
}


def demo_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFPLEX_")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def run_demo(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.commands.cli", "demo", *args],
        capture_output=True,
        text=True,
        env=demo_env(**env),
        timeout=300,
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """A server on the embedded model (no warm-up: the demo's own requests are the first), and a directory of
    adapters built for it while it loads, with a demo.json and a report for the embedding."""
    root = tmp_path_factory.mktemp("demo")
    server = Server(DEFAULT_MODEL_DIR, root / "data", root / "server.log", DIFFPLEX_WARMUP="false")
    try:
        adapters = root / "shipped"
        adapters.mkdir()
        spec = tiny_spec(DEFAULT_MODEL_DIR)  # R 4, P 3: what Server configures
        (adapters / "striped.safetensors").write_bytes(lora_file(spec))
        (adapters / "night.safetensors").write_bytes(vpt_file(spec))
        (adapters / "emblem.safetensors").write_bytes(ti_file(spec, TOKEN))
        (adapters / "emblem.eval.json").write_text(
            json.dumps(
                {"token": TOKEN, "concept_pins": PINS, "concept_accuracy": 0.875, "targets": {"concept_accuracy": 0.8}}
            )
        )
        (adapters / "demo.json").write_text(json.dumps(MANIFEST))
        server.wait_ready()
        yield server, adapters
    finally:
        server.stop()


def test_the_demo_makes_a_tenant_uploads_the_adapters_and_writes_one_grid(
    served: tuple[Server, Path], tmp_path: Path
) -> None:
    server, adapters = served
    keys = tmp_path / "data"  # the key found as the server finds it: the embedded store's key file
    keys.mkdir()
    (keys / ADMIN_KEY_FILE).write_text(ADMIN_KEY + "\n")
    out = tmp_path / "out"
    done = run_demo(
        "--url", server.url, "--adapters", str(adapters), "--out", str(out), "--steps", "2", DIFFPLEX_DATA_DIR=str(keys)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert (
        f"diffplex demo: admin key from the key file {(keys / ADMIN_KEY_FILE).resolve()} (DIFFPLEX_DATA_DIR)" in lines
    )
    assert any(line.startswith("skipped absent:") for line in lines)

    # One row per adapter (LoRA, VPT: 3 images; the embedding: its words and its token), 64x64 images shown 3x.
    png = out / "demo.png"
    assert f"diffplex demo: wrote {png.resolve()} (" in done.stdout
    with Image.open(png) as grid:
        assert grid.size == demo_grid.grid_size([3, 3, 2], (64, 64))
        assert grid.size == (8 + 3 * (192 + 8), 8 + 18 + 3 * (16 + 14 + 192 + 8))

    # The key once, in an export line; each request as curl with $DIFFPLEX_KEY; the answers' warnings.
    exports = [line for line in lines if line.startswith("export DIFFPLEX_KEY=")]
    assert len(exports) == 1
    tenant_key = exports[0].split("=", 1)[1]
    curls = [line for line in lines if line.startswith("curl ")]
    assert len(curls) == 3 + 8  # three uploads, eight generations
    assert all('"Authorization: Bearer $DIFFPLEX_KEY"' in line and tenant_key not in line for line in curls)
    bodies = [json.loads(shlex.split(line)[shlex.split(line).index("-d") + 1]) for line in curls if " -d " in line]
    assert {body["seed"] for body in bodies} == {5} and {body["steps"] for body in bodies} == {2}
    prompts = [body["prompt"] for body in bodies]
    assert "a red circle <lora:striped:1>" in prompts and "a yellow star <vpt:night>" in prompts
    assert {"name": "striped", "weight": 1} in [a for body in bodies for a in body.get("adapters", [])]
    assert f"a {TOKEN} on a white background" in prompts
    assert "a purple outlined square on a white background" in prompts
    assert any(line.startswith("#   warning: ") and "star" in line for line in lines)
    assert any("emblem.eval.json: " in line and "concept accuracy 0.88 (target 0.80)" in line for line in lines)

    # The tenant is kept, with its adapters, so the lines can be pasted.
    tenant = re.search(r"created tenant (demo-[0-9a-f]+)", done.stdout).group(1)  # type: ignore[union-attr]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        listed = client.get("/v1/admin/tenants", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()["data"]
        assert tenant in [t["tenant"] for t in listed]
        mine = client.get("/v1/adapters", headers={"Authorization": f"Bearer {tenant_key}"}).json()["data"]
        assert {(a["name"], a["kind"]) for a in mine} == {
            ("striped", "lora"),
            ("night", "vpt"),
            ("emblem", "textual_inversion"),
        }


def test_a_refused_admin_key_exits_2_saying_where_the_key_came_from(
    served: tuple[Server, Path], tmp_path: Path
) -> None:
    server, adapters = served
    done = run_demo(
        "--url", server.url, "--adapters", str(adapters), "--out", str(tmp_path), DIFFPLEX_ADMIN_KEY="wrong"
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert re.search(r"refused the admin key from DIFFPLEX_ADMIN_KEY \((401|403): ", done.stderr), done.stderr
    assert not (tmp_path / "demo.png").exists()


def test_a_failure_on_the_way_exits_1_and_leaves_no_tenant(served: tuple[Server, Path], tmp_path: Path) -> None:
    """A file the server refuses is skipped with its reason; a refused request stops the demo (exit 1, the
    server's message) and the tenant it made is deleted: nothing was printed to paste."""
    server, adapters = served
    (tmp_path / "broken.safetensors").write_bytes(b"not an adapter")
    (tmp_path / "striped.safetensors").write_bytes((adapters / "striped.safetensors").read_bytes())
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def tenants() -> set[str]:
        return {t["tenant"] for t in httpx.get(f"{server.url}/v1/admin/tenants", headers=admin).json()["data"]}

    before = tenants()
    done = run_demo("--url", server.url, "--adapters", str(tmp_path), "--steps", "100000", DIFFPLEX_ADMIN_KEY=ADMIN_KEY)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"^skipped broken: the server refused .*broken.safetensors \(400: ", done.stdout, re.M), (
        done.stdout
    )
    assert "failed (400): " in done.stderr and "steps" in done.stderr
    assert "export DIFFPLEX_KEY" not in done.stdout
    assert tenants() == before


def test_a_server_that_is_not_there_exits_2(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = run_demo("--url", url, "--out", str(tmp_path), DIFFPLEX_DATA_DIR=str(tmp_path))  # no key either
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"cannot reach the server at {url} (connection refused" in done.stderr
    assert "make serve" in done.stderr


def test_no_admin_key_at_all_exits_2_naming_the_file_it_looked_for(served: tuple[Server, Path], tmp_path: Path) -> None:
    done = run_demo("--url", served[0].url, DIFFPLEX_DATA_DIR=str(tmp_path))
    assert done.returncode == 2
    assert f"no admin key: DIFFPLEX_ADMIN_KEY is unset and there is no key file {tmp_path.resolve() / 'admin_key'}" in (
        done.stderr
    )


def test_the_key_file_is_the_one_the_server_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.tenants.admin_key import admin_key_path, resolve_admin_key

    monkeypatch.delenv("DIFFPLEX_ADMIN_KEY", raising=False)
    monkeypatch.delenv("DIFFPLEX_REDIS_URL", raising=False)
    settings = Settings(data_dir=tmp_path)
    generated = resolve_admin_key(settings)  # what a server on this store would write
    assert admin_key(settings) == (generated, f"the key file {admin_key_path(settings).resolve()} (DIFFPLEX_DATA_DIR)")
    assert admin_key(Settings(data_dir=tmp_path, admin_key="set")) == ("set", "DIFFPLEX_ADMIN_KEY")
    with pytest.raises(DemoError, match="DIFFPLEX_ADMIN_KEY") as refused:
        admin_key(Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:6379/0"))
    assert refused.value.status == 2


def test_demo_help_imports_no_torch() -> None:
    code = "import sys; from service.commands import demo; demo.build_parser(); assert 'torch' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_rows_follow_the_kind_the_server_reports(tmp_path: Path) -> None:
    (tmp_path / "demo.json").write_text(json.dumps(MANIFEST))
    for name in ("striped", "other"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"x")
    manifest = load_manifest(tmp_path)
    files, skipped = find_adapters(tmp_path, manifest)
    assert [f.name for f in files] == ["striped", "other"]  # the manifest's order, then the rest
    assert [line.split(":")[0] for line in skipped] == ["skipped night", "skipped emblem", "skipped absent"]

    lora = plan_row(files[0], {"kind": "lora"}, manifest, steps=3, seed=1)
    assert [c.label for c in lora.cells] == ["no adapter", "adapters: striped", "<lora:striped:1>"]
    # a file the manifest does not name gets its kind's default; a VPT's tag is <vpt:name>
    vpt = plan_row(files[1], {"kind": "vpt"}, manifest, steps=3, seed=1)
    assert [c.body["prompt"] for c in vpt.cells] == ["a yellow triangle"] * 2 + ["a yellow triangle <vpt:other>"]
    assert vpt.cells[1].body["adapters"] == [{"name": "other", "weight": 1}]
    assert {c.body["seed"] for c in vpt.cells} == {1} and {c.body["steps"] for c in vpt.cells} == {3}

    # an embedding: its token from the server, what it means from the report, else from the manifest, else alone
    emblem = AdapterFile("emblem", tmp_path / "emblem.safetensors", {"concept_pins": PINS})
    ti = plan_row(emblem, {"kind": "textual_inversion", "tokens": ["<e>"]}, manifest, steps=3, seed=1)
    assert [(c.label, c.body["prompt"]) for c in ti.cells] == [
        ("words: purple outlined square", "a purple outlined square on a white background"),
        ("<e>", "a <e> on a white background"),
    ]
    assert meaning_of(None, {"meaning": "red solid circle"}) == "red solid circle"
    alone = plan_row(
        AdapterFile("emblem", emblem.path, None), {"kind": "textual_inversion", "tokens": ["<e>"]}, manifest, 3, 1
    )
    assert [c.label for c in alone.cells] == ["<e>"] and "stands for" in alone.notes[0]


def test_curl_lines_paste_as_typed() -> None:
    body = {"prompt": "a red circle, the user's <lora:striped:1>", "seed": 7}
    line = curl_generate("http://127.0.0.1:8000", body, "striped-tag.png")
    words = shlex.split(line.split(" | ")[0])
    assert words[words.index("-d") + 1] == json.dumps(body, separators=(", ", ": "))
    assert "Authorization: Bearer $DIFFPLEX_KEY" in words  # double-quoted in the line: the shell expands it


def test_a_broken_manifest_exits_2_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "demo.json").write_text("{not json")
    with pytest.raises(DemoError, match="demo.json: not readable JSON") as error:
        load_manifest(tmp_path)
    assert error.value.status == 2


def test_readiness_decides_before_anything_is_made() -> None:
    def answering(status: int, body: dict) -> httpx.Client:
        transport = httpx.MockTransport(lambda request: httpx.Response(status, json=body))
        return httpx.Client(base_url="http://server", transport=transport)

    assert (
        wait_ready(answering(200, {"status": "ready", "backend": "pytorch"}), "http://server", 0)["backend"]
        == "pytorch"
    )
    loading = {"error": {"message": "the model is loading"}}
    with pytest.raises(DemoError, match="not ready after 0s: the model is loading") as error:
        wait_ready(answering(503, loading), "http://server", 0)
    assert error.value.status == 2
    with pytest.raises(DemoError, match="answered 404") as error:
        wait_ready(answering(404, {}), "http://server", 0)
    assert error.value.status == 2
