"""Before the load: the workload's tenants (existing keys from the environment, or created with the admin
key), their adapters uploaded, and one probe request per mix entry so a refused request stops the run
with the server's reason instead of failing thousands of times."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import httpx

from service.loadtest.client import generate, message_of
from service.loadtest.errors import LoadtestError
from service.loadtest.mix import Draw
from service.loadtest.workload import TenantSpec, Workload

ADMIN_TENANTS = "/v1/admin/tenants"


@dataclass
class Tenants:
    keys: dict[str, str] = field(default_factory=dict)  # workload tenant -> API key
    server_names: dict[str, str] = field(default_factory=dict)  # workload tenant -> tenant name on the server
    created: list[str] = field(default_factory=list)  # server tenants this run created (removed at the end)


def _admin_headers(admin_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"}


async def _create(client: httpx.AsyncClient, tenant: TenantSpec, name: str, admin_key: str | None) -> str:
    if not admin_key:
        raise LoadtestError(
            f"tenant {tenant.name!r} has no key: set {tenant.key_variable} to its API key, or pass the server's "
            "admin key (--admin-key or DIFFPLEX_ADMIN_KEY) so the load test creates it"
        )
    response = await client.post(ADMIN_TENANTS, json={"name": name}, headers=_admin_headers(admin_key))
    if response.status_code in (401, 403):
        raise LoadtestError(
            f"the admin key was refused ({response.status_code}: {message_of(response)}): pass the server's admin "
            "key with --admin-key or DIFFPLEX_ADMIN_KEY"
        )
    if response.status_code == 409:
        raise LoadtestError(
            f"tenant {name!r} exists already on the server: set {tenant.key_variable} to its key, or pick another "
            "--tenant-suffix"
        )
    if response.status_code != 201:
        raise LoadtestError(f"creating tenant {name!r} failed ({response.status_code}): {message_of(response)}")
    return str(response.json()["api_key"])


async def _upload(client: httpx.AsyncClient, tenant: TenantSpec, key: str) -> None:
    for adapter in tenant.adapters:
        form = {k: v for k, v in (("kind", adapter.kind), ("token", adapter.token)) if v}
        response = await client.put(
            f"/v1/adapters/{adapter.name}",
            files={"file": (adapter.file.name, adapter.file.read_bytes())},
            data=form,
            headers={"Authorization": f"Bearer {key}"},
        )
        if response.status_code == 401:
            raise LoadtestError(
                f"the key of tenant {tenant.name!r} was refused (401): check {tenant.key_variable} or let the load "
                "test create the tenant (unset it and pass --admin-key)"
            )
        if response.status_code not in (200, 201):
            raise LoadtestError(
                f"uploading adapter {adapter.name!r} ({adapter.file}) for tenant {tenant.name!r} failed "
                f"({response.status_code}): {message_of(response)}"
            )


async def prepare(client: httpx.AsyncClient, workload: Workload, admin_key: str | None, suffix: str) -> Tenants:
    tenants = Tenants()
    try:
        for spec in workload.tenants:
            key = os.environ.get(spec.key_variable)
            name = spec.name
            if not key:
                name = spec.name + suffix
                key = await _create(client, spec, name, admin_key)
                tenants.created.append(name)
            tenants.keys[spec.name], tenants.server_names[spec.name] = key, name
            await _upload(client, spec, key)
    except BaseException:
        await remove(client, tenants, admin_key)  # do not leave half a setup behind
        raise
    return tenants


async def probe(client: httpx.AsyncClient, workload: Workload, tenants: Tenants) -> None:
    """One request per (tenant, mix entry it sends): the server validates what the file cannot (samplers,
    limits, each tenant's own adapter files), and the model is warm when the load starts."""
    for tenant in workload.tenants:
        for name, spec in workload.entries_for(tenant.name):
            draw = Draw(tenant.name, name, spec.body(spec.prompt_choices[0], seed=0), spec.n)
            sample = await generate(client, tenants.keys[tenant.name], draw, time.perf_counter())
            if not sample.ok:
                raise LoadtestError(
                    f"the probe request of {name!r} (tenant {tenant.name!r}) failed "
                    f"({sample.status or 'no answer'}): {sample.error}: fix the workload entry"
                )


async def remove(client: httpx.AsyncClient, tenants: Tenants, admin_key: str | None) -> None:
    """Delete the tenants this run created (their keys and adapters); best effort."""
    if not admin_key:
        return
    for name in tenants.created:
        try:
            await client.delete(f"{ADMIN_TENANTS}/{name}", headers=_admin_headers(admin_key))
        except httpx.HTTPError:
            pass
