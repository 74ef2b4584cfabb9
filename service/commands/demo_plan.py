"""What `diffplex demo` shows: the shipped adapter files, the manifest (`demo.json`) that says which prompts to
show each with, the evaluation reports beside them (`<name>.eval.json`), the requests of each grid row, and
the `curl` line that repeats a request.

Nothing here talks to the server or imports more than the standard library, so `diffplex demo --help` is fast.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "demo.json"
ADAPTER_SUFFIXES = (".safetensors", ".pt", ".bin")
KIND_TITLES = {"lora": "LoRA", "vpt": "VPT", "textual_inversion": "textual inversion"}
# The order the shapes world's captions name a composite's attributes in ("a large purple outlined square").
ATTRIBUTE_ORDER = ("size", "color", "fill", "shape")
# Without a manifest (or an entry for the file's kind): what each kind is shown with.
DEFAULTS: dict[str, dict[str, Any]] = {
    "lora": {"prompt": "a red circle", "weight": 1},
    "vpt": {"prompt": "a yellow triangle", "weight": 1},
    "textual_inversion": {"prompt": "a {token} on a white background", "words": "a {meaning} on a white background"},
}


class DemoError(Exception):
    """A reason to stop, with the exit status: 2 for what the user must fix before anything runs (server not
    reachable or not ready, admin key refused, a bad manifest), 1 for a failure on the way."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Manifest:
    seed: int = 7
    steps: int = 25
    guidance_scale: float | None = None
    adapters: dict[str, dict[str, Any]] = field(default_factory=dict)  # adapter name -> its entry
    default: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(DEFAULTS))  # kind -> entry

    def entry(self, name: str, kind: str) -> dict[str, Any]:
        return {**DEFAULTS.get(kind, {}), **self.default.get(kind, {}), **self.adapters.get(name, {})}


def load_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    if not path.is_file():
        return Manifest()
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DemoError(f"{path}: not readable JSON ({error})", status=2) from None
    if not isinstance(raw, dict):
        raise DemoError(f"{path}: the top level must be an object", status=2)
    adapters, default = raw.get("adapters", {}), raw.get("default", {})
    for where, table in (("adapters", adapters), ("default", default)):
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            raise DemoError(f"{path}: `{where}` must map names to objects", status=2)
    try:
        return Manifest(
            seed=int(raw.get("seed", 7)),
            steps=int(raw.get("steps", 25)),
            guidance_scale=None if raw.get("guidance_scale") is None else float(raw["guidance_scale"]),
            adapters=adapters,
            default={**DEFAULTS, **default},
        )
    except (TypeError, ValueError) as error:
        raise DemoError(f"{path}: seed, steps and guidance_scale must be numbers ({error})", status=2) from None


@dataclass(frozen=True)
class AdapterFile:
    name: str  # the adapter's name on the server: the file's stem
    path: Path
    report: dict[str, Any] | None  # <name>.eval.json, when there is one


def find_adapters(directory: Path, manifest: Manifest) -> tuple[list[AdapterFile], list[str]]:
    """The adapter files to show (the manifest's first, in its order, then any other file here) and a line for
    each adapter the manifest names whose file is missing."""
    files = {p.stem: p for p in sorted(directory.iterdir()) if p.is_file() and p.suffix in ADAPTER_SUFFIXES}
    missing = [name for name in manifest.adapters if name not in files]
    skipped = [f"skipped {name}: no {name}.safetensors (or .pt) in {directory}" for name in missing]
    order = [name for name in manifest.adapters if name in files] + [n for n in files if n not in manifest.adapters]
    return [AdapterFile(name, files[name], read_report(directory, name)) for name in order], skipped


def read_report(directory: Path, name: str) -> dict[str, Any] | None:
    """The adapter's evaluation report (`diffplex adapters eval --json`): <name>.eval.json, else <name>.json."""
    for path in (directory / f"{name}.eval.json", directory / f"{name}.json"):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(report, dict):
            return report
    return None


def meaning_of(report: dict[str, Any] | None, entry: dict[str, Any]) -> str | None:
    """What a textual-inversion token stands for, in the model's words: the report's concept_pins
    ({"shape": "square", "color": "purple", ...} -> "purple outlined square"), else the manifest's `meaning`."""
    pins = (report or {}).get("concept_pins")
    if isinstance(pins, dict) and pins:
        ordered = [a for a in ATTRIBUTE_ORDER if a in pins] + [a for a in pins if a not in ATTRIBUTE_ORDER]
        return " ".join(str(pins[a]) for a in ordered)
    meaning = entry.get("meaning")
    return str(meaning) if meaning else None


def _figure(value: Any) -> str | None:
    return f"{value:.2f}" if isinstance(value, int | float) and not isinstance(value, bool) else None


def describe_report(name: str, report: dict[str, Any]) -> str:
    """One line of the evaluation report's own figures (whatever of them it holds)."""
    parts = []
    concept = report.get("concept")
    if concept:
        parts.append(f"concept {concept!r}")
    accuracy = _figure(report.get("concept_accuracy"))
    if accuracy:
        extra = []
        target = _figure((report.get("targets") or {}).get("concept_accuracy"))
        if target:
            extra.append(f"target {target}")
        words = _figure(report.get("concept_accuracy_words_without_adapter"))
        if words:
            extra.append(f"{words} without the adapter")
        parts.append(f"concept accuracy {accuracy}" + (f" ({'; '.join(extra)})" if extra else ""))
    without = _figure(report.get("regular_prompt_accuracy_without_adapter"))
    with_ = _figure(report.get("regular_prompt_accuracy_with_adapter"))
    if without and with_:
        parts.append(f"other prompts {without} -> {with_} with it")
    passed = report.get("passed")
    if isinstance(passed, dict) and passed:
        failed = [k for k, ok in passed.items() if not ok]
        parts.append("passed" if not failed else "did not pass: " + ", ".join(failed))
    return f"{name}.eval.json: " + (", ".join(parts) if parts else "no figures")


@dataclass(frozen=True)
class Cell:
    """One image of a grid row: what was asked, and the request that asks it."""

    label: str  # the caption over the image
    slug: str  # for file names: none, field, tag, words, token
    body: dict[str, Any]


@dataclass
class Row:
    adapter: str
    title: str  # the row's header in the grid
    cells: list[Cell]
    notes: list[str] = field(default_factory=list)  # what could not be shown, and why


def _weight(value: Any) -> str:
    return f"{float(value):g}"


def plan_row(adapter: AdapterFile, meta: dict[str, Any], manifest: Manifest, steps: int, seed: int) -> Row:
    """The requests of one adapter's row, from its kind and tokens as the server reported them at upload."""
    kind = str(meta.get("kind"))
    entry = manifest.entry(adapter.name, kind)
    common: dict[str, Any] = {"n": 1, "steps": steps, "seed": seed, "response_format": "b64_json"}
    if manifest.guidance_scale is not None:
        common["guidance_scale"] = manifest.guidance_scale
    title = f"{adapter.name} ({KIND_TITLES.get(kind, kind)})"
    if kind == "textual_inversion":
        tokens = [str(t) for t in meta.get("tokens") or []]
        if not tokens:
            return Row(adapter.name, title, [], [f"{adapter.name}: the server reports no token for this embedding"])
        token = tokens[0]
        notes = []
        reported = (adapter.report or {}).get("token")
        if reported and reported != token:
            notes.append(f"{adapter.name}: the report names token {reported}, the server took {token}")
        cells = []
        meaning = meaning_of(adapter.report, entry)
        if meaning and entry.get("words"):
            words = str(entry["words"]).replace("{meaning}", meaning)
            cells.append(Cell(f"words: {meaning}", "words", {"prompt": words, **common}))
            title += f": {token} = {meaning}"
        else:
            notes.append(
                f"{adapter.name}: neither {adapter.name}.eval.json (concept_pins) nor demo.json (`meaning`) says what "
                f"{token} stands for: showing the token alone"
            )
        prompt = str(entry.get("prompt", "a {token}")).replace("{token}", token)
        cells.append(Cell(token, "token", {"prompt": prompt, **common}))
        return Row(adapter.name, title + f" - {prompt}", cells, notes)
    if kind not in ("lora", "vpt"):
        return Row(adapter.name, title, [], [f"{adapter.name}: the demo cannot show an adapter of kind {kind!r}"])
    prompt, weight = str(entry.get("prompt", "a red circle")), entry.get("weight", 1)
    tag = f"<lora:{adapter.name}:{_weight(weight)}>" if kind == "lora" else f"<vpt:{adapter.name}>"
    field_label = f"adapters: {adapter.name}" + ("" if float(weight) == 1 else f" {_weight(weight)}")
    listed = [{"name": adapter.name, "weight": weight}]
    cells = [
        Cell("no adapter", "none", {"prompt": prompt, **common}),
        Cell(field_label, "field", {"prompt": prompt, "adapters": listed, **common}),
        Cell(tag, "tag", {"prompt": f"{prompt} {tag}", **common}),
    ]
    return Row(adapter.name, f"{title} - {prompt}", cells)


KEY_VARIABLE = "DIFFPLEX_KEY"
AUTH = f'-H "Authorization: Bearer ${KEY_VARIABLE}"'


def display_path(path: Path) -> str:
    """The path as typed from the current directory when it lies under it, else absolute."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)


def curl_upload(url: str, name: str, path: Path) -> str:
    target = shlex.quote(f"{url}/v1/adapters/{name}")
    return f"curl -sS -X PUT {target} {AUTH} -F {shlex.quote('file=@' + display_path(path))}"


def curl_generate(url: str, body: dict[str, Any], png: str) -> str:
    target = shlex.quote(f"{url}/v1/images/generations")
    data = shlex.quote(json.dumps(body, separators=(", ", ": ")))
    return (
        f"curl -sS {target} {AUTH} -H 'Content-Type: application/json' -d {data}"
        f" | jq -r '.data[0].b64_json' | base64 -d > {shlex.quote(png)}"
    )
