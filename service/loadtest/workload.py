"""Workload files (YAML): which tenants send what, in which proportions, with which adapters.

```yaml
name: two-tenants
tenants:
  - name: acme
    weight: 3                      # share of the requests this tenant sends
    adapters:                      # uploaded before the run (PUT /v1/adapters/{name})
      - {name: striped, file: adapters/lora-a.safetensors, kind: lora}
  - name: globex
requests:                          # the weighted mix; each draw picks a tenant, then one entry it may send
  - name: quick
    weight: 2
    prompts: ["a red circle", "a blue square"]
    steps: 10
  - name: lora
    tenants: [acme]                # only these tenants send it (default: all)
    prompt: "a green star"
    adapters: [{name: striped, weight: 0.8}]
```

Everything is checked when the file is read; a mistake is reported with its field path
(`requests[1].adapters[0].name: ...`) so the file can be fixed before any request is sent.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SIZE = re.compile(r"\d{1,5}x\d{1,5}")


class WorkloadError(ValueError):
    """The workload file cannot be used; the message names the file, the field and what to change."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not a silently ignored one


class AdapterFile(_Strict):
    name: str = Field(min_length=1, max_length=100)
    file: Path
    kind: Literal["lora", "textual_inversion", "ti", "embedding", "vpt"] | None = None
    token: str | None = None  # textual inversion files that do not name their token


class TenantSpec(_Strict):
    name: str = Field(min_length=1, max_length=64)
    weight: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    key_env: str | None = None  # environment variable holding an existing key; default DIFFPLEX_KEY_<NAME>
    adapters: list[AdapterFile] = Field(default_factory=list)

    @property
    def key_variable(self) -> str:
        return self.key_env or "DIFFPLEX_KEY_" + re.sub(r"[^A-Z0-9]", "_", self.name.upper())


class AdapterUse(_Strict):
    name: str = Field(min_length=1)
    weight: float = Field(default=1.0, allow_inf_nan=False)


class RequestSpec(_Strict):
    """One kind of request in the mix: the body fields of `POST /v1/images/generations` it sends.

    Fields left out are left to the server's defaults; the server checks the values (samplers, limits)
    and the run's probe request reports what it refuses before the load starts."""

    name: str | None = None
    weight: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    tenants: list[str] | None = None  # who sends it; None: every tenant
    prompt: str | None = Field(default=None, min_length=1)
    prompts: list[str] | None = Field(default=None, min_length=1)  # one is drawn per request
    negative_prompt: str | None = None
    n: int = Field(default=1, ge=1)
    size: str | None = None
    steps: int | None = Field(default=None, ge=1)
    sampler: str | None = None
    guidance_scale: float | None = Field(default=None, allow_inf_nan=False)
    eta: float | None = Field(default=None, allow_inf_nan=False)
    guidance_interval: tuple[float, float] | None = None
    uncond_refresh: int | None = Field(default=None, ge=1)
    cache_interval: int | None = Field(default=None, ge=1)
    adapters: list[AdapterUse] = Field(default_factory=list)
    response_format: Literal["b64_json", "url"] = "b64_json"

    @field_validator("size")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None and not SIZE.fullmatch(value):
            raise ValueError(f"{value!r} is not WIDTHxHEIGHT, e.g. '64x64'")
        return value

    @model_validator(mode="after")
    def _one_prompt_source(self) -> RequestSpec:
        if (self.prompt is None) == (self.prompts is None):
            raise ValueError("give either `prompt` (one text) or `prompts` (a list drawn from), not both or neither")
        return self

    @property
    def prompt_choices(self) -> list[str]:
        return self.prompts if self.prompts is not None else [self.prompt]  # type: ignore[list-item]

    def body(self, prompt: str, seed: int) -> dict[str, Any]:
        """The JSON body of one request: the fields this entry sets, plus the drawn prompt and seed."""
        fields = self.model_dump(
            exclude={"name", "weight", "tenants", "prompt", "prompts", "adapters"}, exclude_none=True
        )
        if self.adapters:
            fields["adapters"] = [a.model_dump() for a in self.adapters]
        return {"prompt": prompt, "seed": seed, **fields}


class Workload(_Strict):
    name: str = "workload"
    seed: int = 0  # default seed of the request draws and arrivals (--seed overrides)
    tenants: list[TenantSpec] = Field(min_length=1)
    requests: list[RequestSpec] = Field(min_length=1)

    def entries_for(self, tenant: str) -> list[tuple[str, RequestSpec]]:
        return [(label(i, r), r) for i, r in enumerate(self.requests) if r.tenants is None or tenant in r.tenants]


def label(index: int, request: RequestSpec) -> str:
    return request.name or f"requests[{index}]"


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _cross_check(workload: Workload, base: Path, check_files: bool) -> list[str]:
    """What pydantic cannot see field by field: names that must match, files that must exist."""
    problems = []
    names = [t.name for t in workload.tenants]
    for i, tenant in enumerate(workload.tenants):
        if names.count(tenant.name) > 1 and names.index(tenant.name) != i:
            problems.append(f"tenants[{i}].name: tenant {tenant.name!r} is declared twice")
        adapter_names = [a.name for a in tenant.adapters]
        for j, adapter in enumerate(tenant.adapters):
            where = f"tenants[{i}].adapters[{j}]"
            if adapter_names.count(adapter.name) > 1 and adapter_names.index(adapter.name) != j:
                problems.append(f"{where}.name: adapter {adapter.name!r} is declared twice for {tenant.name!r}")
            path = adapter.file if adapter.file.is_absolute() else base / adapter.file
            if check_files and not path.is_file():
                problems.append(f"{where}.file: {path} does not exist (paths are relative to the workload file)")
        if not workload.entries_for(tenant.name):
            problems.append(f"tenants[{i}]: no entry of `requests` may be sent by {tenant.name!r}")
    by_name = {t.name: t for t in workload.tenants}
    for i, request in enumerate(workload.requests):
        for k, tenant in enumerate(request.tenants or []):
            if tenant not in by_name:
                problems.append(
                    f"requests[{i}].tenants[{k}]: {tenant!r} is not one of the tenants ({', '.join(names)})"
                )
        senders = [by_name[t] for t in (request.tenants or names) if t in by_name]
        for k, use in enumerate(request.adapters):
            missing = [t.name for t in senders if use.name not in {a.name for a in t.adapters}]
            if missing:
                problems.append(
                    f"requests[{i}].adapters[{k}].name: adapter {use.name!r} is not declared by tenant(s) "
                    f"{', '.join(missing)}: add it to their `adapters`, or limit the entry with `tenants:`"
                )
    return problems


def parse_workload(data: object, base: Path, source: str = "workload", check_files: bool = True) -> Workload:
    """A parsed YAML document -> Workload; WorkloadError listing every problem with its field path.
    `check_files=False` for drivers that only send requests (the adapters were uploaded already)."""
    if not isinstance(data, dict):
        raise WorkloadError(f"{source}: the file must be a YAML mapping with `tenants` and `requests`")
    try:
        workload = Workload.model_validate(data)
    except ValidationError as error:
        lines = [f"{_path(tuple(e['loc']))}: {e['msg']}" for e in error.errors()]
        raise WorkloadError(f"{source} is not a valid workload:\n  " + "\n  ".join(lines)) from None
    if problems := _cross_check(workload, base, check_files):
        raise WorkloadError(f"{source} is not a valid workload:\n  " + "\n  ".join(problems))
    for tenant in workload.tenants:  # from here on, adapter files are absolute
        for adapter in tenant.adapters:
            if not adapter.file.is_absolute():
                adapter.file = (base / adapter.file).resolve()
    return workload


def load_workload(path: Path, check_files: bool = True) -> Workload:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise WorkloadError(f"cannot read the workload file {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise WorkloadError(f"{path} is not valid YAML: {error}") from None
    return parse_workload(data, path.parent, str(path), check_files)
