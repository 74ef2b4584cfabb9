"""uvicorn's connection bounds for `diffplex serve` and `diffplex worker`: how many connections, how large a
request head, and how long a request head may take to arrive.

uvicorn answers 503 to a request that arrives while `limit_concurrency` connections are open, counting idle
ones; it closes an idle keep-alive connection after `timeout_keep_alive` but sets no deadline on a request's
head, so a connection that sends nothing, or a header byte a second, stays open for ever. A few hundred of
those from one client would then hold every slot and get everyone else a 503. `HeadTimeoutH11Protocol`
closes a connection whose next request head is not in within the deadline, and when the connections reach
the cap, closes those that have waited longest for a head (for at least `MIN_IDLE_S`) to make room: only
requests being received or served can fill the cap for long (a slow body needs a key, and has its own
deadline).
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from service.core.settings import Settings

log = logging.getLogger(__name__)

# Request line and headers: a key and the usual headers take about 1 kB. h11's own default, stated here so
# it does not change under us; larger heads get uvicorn's 400.
MAX_HEAD_BYTES = 16 * 1024
# A client opens a connection to send a request at once; one silent for this long is a pool's spare or
# hostile, and may be closed to make room. Younger ones are left alone: a burst of new connections at the
# cap is answered 503 by uvicorn rather than cut without an answer.
MIN_IDLE_S = 1.0


class HeadTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with `head_timeout_s` for each request head: from the connection's opening, and
    from the first byte of each next request on a kept-alive connection (the idle time between requests is
    uvicorn's keep-alive timeout). Between requests a connection is *parked*, and may be closed to make room."""

    head_timeout_s: float = 30.0
    # The parked connections of one server, longest-parked first (a dict keeps insertion order), so making
    # room costs a look at the few it closes, not a scan of thousands. `uvicorn_options` gives each server
    # its own subclass, with its own dict.
    parked: dict[HeadTimeoutH11Protocol, float] = {}

    def connection_made(self, transport: Any) -> None:  # asyncio.Transport; Any: the base's signature
        self._head_timer: Any = None
        super().connection_made(transport)
        self._park()
        self._await_head()
        self._make_room()

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        if self._waiting_for_head():  # a request may start in this data: room for it if parked ones hold the cap
            self._make_room()
        super().data_received(data)
        if self.cycle is not cycle:  # a request head was parsed: its body and response have their own bounds
            self._head_arrived()
        elif self._waiting_for_head():  # the first bytes of the next request on a kept-alive connection
            self._await_head()

    def on_response_complete(self) -> None:
        self._park()
        super().on_response_complete()  # may start a pipelined request at once
        if not self._waiting_for_head():
            self._head_arrived()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_arrived()
        super().connection_lost(exc)

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _park(self) -> None:
        self.parked.setdefault(self, self.loop.time())

    def _await_head(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _head_arrived(self) -> None:
        self.parked.pop(self, None)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _make_room(self) -> None:
        """At the cap, close the connections parked longest (for at least MIN_IDLE_S; never this one), as many
        as it takes to bring the count under the cap."""
        if self.limit_concurrency is None:
            return
        excess = len(self.connections) - self.limit_concurrency + 1
        oldest = self.loop.time() - MIN_IDLE_S
        victims = []
        for connection, since in self.parked.items():
            if excess <= len(victims) or since > oldest:
                break
            if connection is not self:
                victims.append(connection)
        for connection in victims:
            connection._close_idle("to make room at the connection cap")

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._waiting_for_head():
            self._close_idle(f"no request head within {self.head_timeout_s:g}s")

    def _close_idle(self, why: str) -> None:
        self._head_arrived()
        if not self.transport.is_closing():
            log.info("closed an idle connection", extra={"reason": why})
            self.transport.close()
        self.connections.discard(self)  # at once: connection_lost, which also does, runs a loop turn later


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of `uvicorn.run` / `uvicorn.Config` that bound connections: at
    `http.max_connections` connections with requests in flight uvicorn answers 503 at once (idle ones make
    room); a request head must arrive within `http.head_timeout_s`, and its body within `http.body_timeout_s`."""
    bounds = {"head_timeout_s": settings.http.head_timeout_s, "parked": {}}
    protocol = type("HeadTimeoutH11Protocol", (HeadTimeoutH11Protocol,), bounds)
    return {
        "http": protocol,
        "limit_concurrency": settings.http.max_connections,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
    }
