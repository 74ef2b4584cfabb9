"""`diffplex demo`: show what tenant adapters do, against a running server, in one command.

It makes a fresh tenant with the admin API, uploads the shipped adapters (adapters/shipped/: each file's kind
is what the server reports at upload), generates each adapter's prompts at one seed without and with it (the
`adapters` field and the prompt tag; a textual-inversion token beside the words it stands for), and writes
one labelled PNG grid. It prints a `curl` line per request, to repeat any of them with the new tenant's key,
and the warnings the server answered with. The tenant is kept, so those lines keep working.

The admin key is found as the server finds it: DIFFPLEX_ADMIN_KEY, else the embedded store's key file
(DIFFPLEX_DATA_DIR/admin_key; run the demo where you started the server). Exit status 2: the server is not
reachable or not ready, or the admin key is missing or refused; 1: something failed on the way.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from service.commands.demo_plan import (
    KEY_VARIABLE,
    AdapterFile,
    Cell,
    DemoError,
    Manifest,
    Row,
    curl_generate,
    curl_upload,
    describe_report,
    display_path,
    find_adapters,
    load_manifest,
    plan_row,
)
from service.tenants.admin_key import admin_key_path  # the file the server writes (light: no model stack)

SHIPPED = Path(__file__).resolve().parents[2] / "adapters" / "shipped"
DEFAULT_OUT = Path(".work/demo")
RETRIES = 3  # a generation answered 429 / 503 (busy) is sent again after its Retry-After, this many times
MAX_RETRY_WAIT_S = 30.0

Result = tuple[Row, Cell, dict[str, Any], bytes]  # a grid cell's request, the server's answer, its image


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffplex demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url",
        help="the server's origin (default: DIFFPLEX_HTTP__PUBLIC_BASE_URL, else http://DIFFPLEX_HOST:DIFFPLEX_PORT, "
        "i.e. http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, metavar="DIR", help="where demo.png goes (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=int, metavar="N", help="denoising steps per image (default: demo.json's, else 25)"
    )
    parser.add_argument("--seed", type=int, metavar="S", help="the seed of every image (default: demo.json's, else 7)")
    parser.add_argument(
        "--adapters",
        type=Path,
        default=SHIPPED,
        metavar="DIR",
        help="the adapter files and their demo.json (default: the shipped ones, adapters/shipped)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds to wait for a server that is still loading its model (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except DemoError as error:
        print(f"diffplex demo: {error}", file=sys.stderr)
        return error.status
    return 0


def say(line: str = "") -> None:
    print(line, flush=True)


def run(args: argparse.Namespace) -> None:
    from pydantic import ValidationError

    from service.core.settings import Settings

    try:
        settings = Settings()
    except ValidationError as error:
        raise DemoError(f"a DIFFPLEX_* setting is not valid: {error}", status=2) from None
    url = (args.url or settings.public_base_url()).rstrip("/")
    if args.steps is not None and args.steps < 1:
        raise DemoError("--steps must be at least 1", status=2)
    if not args.adapters.is_dir():
        raise DemoError(f"no adapter directory {args.adapters}", status=2)
    manifest = load_manifest(args.adapters)
    files, skipped = find_adapters(args.adapters, manifest)
    steps = args.steps if args.steps is not None else manifest.steps
    seed = args.seed if args.seed is not None else manifest.seed

    try:
        client = httpx.Client(base_url=url, timeout=httpx.Timeout(600.0, connect=5.0))
    except (httpx.InvalidURL, ValueError) as error:
        raise DemoError(f"--url {url!r} is not a URL: {error}", status=2) from None
    with client:
        ready = wait_ready(client, url, args.wait)
        say(f"diffplex demo: server {url} is ready" + (f" ({ready['backend']} backend)" if "backend" in ready else ""))
        key, key_source = admin_key(settings)
        say(f"diffplex demo: admin key from {key_source}")
        for line in skipped:
            say(line)
        if not files:
            raise DemoError(f"nothing to show: no adapter files (.safetensors, .pt) in {args.adapters}")
        tenant, tenant_key = create_tenant(client, key, key_source)
        say(f"diffplex demo: created tenant {tenant}")
        try:
            shown = show(client, tenant_key, files, manifest, steps, seed)
        except BaseException:
            # nothing was printed to paste yet: leave no half-made tenant behind (best effort)
            try:
                client.delete(f"/v1/admin/tenants/{tenant}", headers={"Authorization": f"Bearer {key}"})
            except httpx.HTTPError:
                pass
            raise
    uploads, results = shown

    say()
    say(f"export {KEY_VARIABLE}={tenant_key}")
    for adapter, meta in uploads:
        say(f"# upload {adapter.name} ({meta.get('kind')}) from {display_path(adapter.path)}")
        say(curl_upload(url, adapter.name, adapter.path))
        if adapter.report is not None:
            say(f"#   {describe_report(adapter.name, adapter.report)}")
        for row, cell, answer, _ in results:
            if row.adapter != adapter.name:
                continue
            say(f"# {adapter.name}: {cell.label}")
            say(curl_generate(url, cell.body, f"{adapter.name}-{cell.slug}.png"))
            for warning in answer.get("warnings") or []:
                say(f"#   warning: {warning}")
    say()

    from service.commands import demo_grid

    by_row: dict[str, list[Result]] = {}
    for result in results:
        by_row.setdefault(result[0].adapter, []).append(result)
    grid_rows = [
        demo_grid.GridRow(group[0][0].title, [(cell.label, png) for _, cell, _, png in group])
        for group in by_row.values()
    ]
    path = args.out / "demo.png"
    title = f"diffplex demo - seed {seed}, {steps} steps, tenant {tenant}"
    try:
        canvas = demo_grid.write(path, title, grid_rows)
    except OSError as error:
        raise DemoError(f"cannot write {path}: {error}") from None
    say(f"diffplex demo: tenant {tenant} is kept for the lines above (`diffplex tenants delete {tenant}` removes it)")
    say(f"diffplex demo: wrote {display_path(path)} ({canvas.width}x{canvas.height} px; rows: {', '.join(by_row)})")


def show(
    client: httpx.Client,
    tenant_key: str,
    files: list[AdapterFile],
    manifest: Manifest,
    steps: int,
    seed: int,
) -> tuple[list[tuple[AdapterFile, dict[str, Any]]], list[Result]]:
    """Upload the adapters and run every row's requests: (the uploads the server took, with its view of each;
    each image's request and answer, row by row)."""
    uploads, rows = [], []
    for adapter in files:
        meta = upload(client, tenant_key, adapter)
        if isinstance(meta, str):
            say(meta)
            continue
        uploads.append((adapter, meta))
        row = plan_row(adapter, meta, manifest, steps, seed)
        for note in row.notes:
            say(note)
        if row.cells:
            rows.append(row)
    if not rows:
        raise DemoError("nothing to show: the server took none of the adapters")
    cells = [(row, cell) for row in rows for cell in row.cells]
    images = f"{len(cells)} image" + ("s" if len(cells) != 1 else "")
    say(f"diffplex demo: generating {images} ({steps} steps, seed {seed})...")
    answers = generate_all(client, tenant_key, [cell for _, cell in cells])
    results = [(row, cell, answer, image_bytes(answer)) for (row, cell), answer in zip(cells, answers, strict=True)]
    return uploads, results


def admin_key(settings: Any) -> tuple[str, str]:
    """(key, where it came from), found as service/tenants/admin_key.py finds it, except that a missing key
    file is an error here: only the server makes one."""
    if settings.admin_key is not None and settings.admin_key.get_secret_value():
        return settings.admin_key.get_secret_value(), "DIFFPLEX_ADMIN_KEY"
    if settings.redis_url:
        raise DemoError(
            "set DIFFPLEX_ADMIN_KEY to the servers' admin key: with a Redis store (DIFFPLEX_REDIS_URL) there is no key "
            "file",
            status=2,
        )
    path = admin_key_path(settings).resolve()
    try:
        key = path.read_text().strip() if path.is_file() else ""
    except OSError as error:
        raise DemoError(f"cannot read the admin key file {path}: {error}", status=2) from None
    if not key:
        raise DemoError(
            f"no admin key: DIFFPLEX_ADMIN_KEY is unset and there is no key file {path}. Run the demo in the "
            "directory you started the server from, or set DIFFPLEX_DATA_DIR or DIFFPLEX_ADMIN_KEY as the server "
            "has them",
            status=2,
        )
    return key, f"the key file {path} (DIFFPLEX_DATA_DIR)"


def message_of(response: httpx.Response) -> str:
    """The API's `{"error": {"message"}}`, or the start of whatever else came back."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300] or response.reason_phrase


def wait_ready(client: httpx.Client, url: str, wait_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            response = client.get("/readyz", timeout=10.0)
        except httpx.TransportError as error:
            reason = "connection refused" if isinstance(error, httpx.ConnectError) else type(error).__name__
            raise DemoError(
                f"cannot reach the server at {url} ({reason}: {error}): start one with `make serve` "
                "(`diffplex serve`), or point --url at yours",
                status=2,
            ) from None
        if response.status_code == 200:
            try:
                body = response.json()
            except ValueError:
                body = None
            return body if isinstance(body, dict) else {}
        if response.status_code != 503:
            raise DemoError(
                f"{url}/readyz answered {response.status_code} ({message_of(response)}): is this a diffplex server?",
                status=2,
            )
        if time.monotonic() >= deadline:
            raise DemoError(
                f"the server at {url} is not ready after {wait_s:g}s: {message_of(response)} (a server still loading "
                "its model gets there soon: run the demo again, or give it longer with --wait)",
                status=2,
            )
        time.sleep(1.0)


def create_tenant(client: httpx.Client, key: str, key_source: str) -> tuple[str, str]:
    name = f"demo-{secrets.token_hex(4)}"
    response = client.post("/v1/admin/tenants", json={"name": name}, headers={"Authorization": f"Bearer {key}"})
    if response.status_code in (401, 403):
        raise DemoError(
            f"the server refused the admin key from {key_source} ({response.status_code}: {message_of(response)}): "
            "set DIFFPLEX_ADMIN_KEY (or DIFFPLEX_DATA_DIR) as the server at this URL has it",
            status=2,
        )
    if response.status_code != 201:
        raise DemoError(f"creating tenant {name} failed ({response.status_code}): {message_of(response)}")
    return name, str(response.json()["api_key"])


def upload(client: httpx.Client, tenant_key: str, adapter: AdapterFile) -> dict[str, Any] | str:
    """The server's view of the uploaded adapter (kind, tokens...), or the line saying why it was skipped."""
    response = client.put(
        f"/v1/adapters/{adapter.name}",
        files={"file": (adapter.path.name, adapter.path.read_bytes())},
        headers={"Authorization": f"Bearer {tenant_key}"},
    )
    if response.status_code not in (200, 201):
        refused = f"{response.status_code}: {message_of(response)}"
        return f"skipped {adapter.name}: the server refused {display_path(adapter.path)} ({refused})"
    return dict(response.json())


def generate(client: httpx.Client, tenant_key: str, cell: Cell) -> dict[str, Any]:
    for attempt in range(RETRIES + 1):
        try:
            response = client.post(
                "/v1/images/generations", json=cell.body, headers={"Authorization": f"Bearer {tenant_key}"}
            )
        except httpx.TransportError as error:
            raise DemoError(f"{cell.label!r}: the request failed ({type(error).__name__}: {error})") from None
        if response.status_code in (429, 503) and attempt < RETRIES:
            try:
                wait = float(response.headers.get("retry-after", "1"))
            except ValueError:
                wait = 1.0
            time.sleep(min(max(wait, 0.5), MAX_RETRY_WAIT_S))
            continue
        if response.status_code != 200:
            raise DemoError(
                f"{cell.label!r} ({cell.body['prompt']!r}) failed ({response.status_code}): {message_of(response)}"
            )
        return dict(response.json())
    raise AssertionError("unreachable")


def generate_all(client: httpx.Client, tenant_key: str, cells: list[Cell]) -> list[dict[str, Any]]:
    """Every request at once, so the server's engine batches them; the answers in the cells' order."""
    with ThreadPoolExecutor(max_workers=min(8, len(cells))) as pool:
        return list(pool.map(lambda cell: generate(client, tenant_key, cell), cells))


def image_bytes(answer: dict[str, Any]) -> bytes:
    import base64

    try:
        return base64.b64decode(answer["data"][0]["b64_json"])
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise DemoError(f"an answer without its image: {error!r}") from None


if __name__ == "__main__":
    sys.exit(main())
