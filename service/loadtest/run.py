"""A whole load test: readiness, tenants and adapters, probes, then every level in turn (each between two
scrapes of the server's counters), and the tenants it created removed again."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from service.bench.server_metrics import scrape
from service.loadtest.arrivals import Process
from service.loadtest.client import unreachable, wait_ready
from service.loadtest.levels import LevelRun, Recorder, closed_loop, open_loop
from service.loadtest.mix import RequestMix
from service.loadtest.stats import summarise
from service.loadtest.tenants import prepare, probe, remove
from service.loadtest.workload import Workload


@dataclass
class RunConfig:
    url: str
    rates: list[float] = field(default_factory=list)  # open-loop levels, requests/s
    concurrency: list[int] = field(default_factory=list)  # closed-loop levels, users
    duration_s: float = 30.0
    process: Process = "poisson"
    cv: float = 1.0
    seed: int = 0
    slo_s: float = 5.0
    timeout_s: float = 300.0
    ready_wait_s: float = 60.0
    admin_key: str | None = None
    tenant_suffix: str = ""
    keep_tenants: bool = False
    probe: bool = True


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[stats]}"),
        console=console,
        transient=False,
    )


def _all_failed(summary: dict[str, Any], label: str, run: LevelRun) -> str | None:
    if summary["sent"] == 0 or summary["ok"] > 0:
        return None
    first = next(s for s in run.samples if not s.ok)
    counts = ", ".join(f"{k} x{v}" for k, v in summary["errors"].items())
    return f"every request of level {label} failed ({counts}); first: {first.status or 'no answer'}: {first.error}"


async def run(config: RunConfig, workload: Workload, console: Console) -> dict[str, Any]:
    """The report as a dict; raises LoadtestError (setup failed) or returns with `aborted` set (a level failed
    entirely: later levels would only repeat it)."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)  # open loop: never queue on the client
    async with httpx.AsyncClient(base_url=config.url, timeout=config.timeout_s, limits=limits) as client:
        server = await wait_ready(client, config.ready_wait_s)
        try:
            tenants = await prepare(client, workload, config.admin_key, config.tenant_suffix)
        except httpx.TransportError as error:
            raise unreachable(config.url, error) from None
        report: dict[str, Any] = {"server": server, "tenants": tenants.server_names, "levels": [], "aborted": None}
        weights = {t.name: t.weight for t in workload.tenants}
        try:
            if config.probe:
                console.print(f"probing {sum(len(workload.entries_for(t)) for t in weights)} request kind(s)")
                await probe(client, workload, tenants)
            levels = [("open", r) for r in config.rates] + [("closed", c) for c in config.concurrency]
            with _progress(console) as progress:
                for index, (mode, offered) in enumerate(levels):
                    label = f"{offered:g} req/s" if mode == "open" else f"{offered:g} users"
                    recorder = Recorder(progress, progress.add_task(f"{mode} {label}", total=None, stats=""))
                    mix = RequestMix(workload, [config.seed, index, 0])
                    before = await scrape(client)
                    started = time.time()
                    if mode == "open":
                        rng = np.random.default_rng([config.seed, index, 1])
                        level = await open_loop(
                            client,
                            tenants.keys,
                            mix,
                            offered,
                            config.duration_s,
                            rng,
                            recorder,
                            config.process,
                            config.cv,
                        )
                    else:
                        level = await closed_loop(client, tenants.keys, mix, int(offered), config.duration_s, recorder)
                    after = await scrape(client)
                    rows = after.unet_rows - before.unet_rows if before and after else None
                    summary = summarise(
                        level.samples,
                        mode=mode,
                        offered=offered,
                        duration_s=config.duration_s,
                        wall_s=level.wall_s,
                        slo_s=config.slo_s,
                        weights=weights,
                        unet_rows=rows,
                    )
                    summary |= {"started": started, "client_max_lag_s": level.max_lag_s}
                    report["levels"].append(summary)
                    if reason := _all_failed(summary, label, level):
                        report["aborted"] = reason
                        break
        finally:
            if not config.keep_tenants:
                await remove(client, tenants, config.admin_key)
    return report


async def setup_only(config: RunConfig, workload: Workload) -> dict[str, str]:
    """Tenants and adapters for another driver (locust): {key variable: key}; the tenants are kept."""
    async with httpx.AsyncClient(base_url=config.url, timeout=config.timeout_s) as client:
        await wait_ready(client, config.ready_wait_s)
        try:
            tenants = await prepare(client, workload, config.admin_key, config.tenant_suffix)
        except httpx.TransportError as error:
            raise unreachable(config.url, error) from None
        if config.probe:
            await probe(client, workload, tenants)
    return {t.key_variable: tenants.keys[t.name] for t in workload.tenants}
