"""Heartbeats of the jobs running here: their progress and a sign of life written to the store, where other
replicas read them (GET, events) and see the owner alive (else they reclaim the job: recover.py).

A heartbeat also reads back what changed elsewhere: a cancel requested on another replica (which the store's
notification usually brought sooner: run.py; the heartbeat is the fallback when it was lost, and the only path
between processes sharing a LocalStore), or that the job is no longer this replica's (finished or reclaimed
while it looked dead: its run stops writing), or that its tenant was deleted (its run is dropped).
"""

from __future__ import annotations

import asyncio
import logging
import time

from service.jobs.live import LiveJob
from service.stores.base import Store, TenantGone

log = logging.getLogger(__name__)


async def persist(live: LiveJob, store: Store, ttl_s: int) -> bool:
    """Write progress and heartbeat, and act on what the stored record says. False when the store could not be
    written (the next heartbeat tries again)."""
    async with live.lock:
        if live.record.terminal or live.lost or live.orphaned:
            return True  # the final write is `outcome.finish`'s
        live.record.heartbeat = time.time()
        live.dirty = False
        snapshot = live.record.model_copy()
        try:
            stored = await asyncio.to_thread(store.save_progress, snapshot, ttl_s)
            if stored.terminal or stored.owner != snapshot.owner:
                live.lost = True  # finished or reclaimed elsewhere while this replica looked dead
            if stored.cancel_requested and not live.record.cancel_requested:  # its notification was missed
                log.info("cancelling job at its heartbeat", extra={"job": snapshot.id, "step": live.record.step})
            if stored.cancel_requested or live.lost:
                live.record.cancel_requested = stored.cancel_requested
                live.cancel()
        except TenantGone:
            live.orphaned = True  # its rows are freed at the engine's next tick; its run writes nothing
            live.cancel()
        except Exception:
            log.exception("could not persist job", extra={"job": snapshot.id})
            live.dirty = True
            return False
    return True


async def beat(live_jobs: dict[str, LiveJob], store: Store, ttl_s: int) -> None:
    """One heartbeat of every job running here."""
    for live in list(live_jobs.values()):
        if not live.record.terminal:
            await persist(live, store, ttl_s)


async def heartbeat_loop(live_jobs: dict[str, LiveJob], store: Store, ttl_s: int, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        await beat(live_jobs, store, ttl_s)
