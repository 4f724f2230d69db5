"""Serving the console with uvicorn (`hivemind console`), on a socket already
bound (console/listener.py): always on, or until it has been idle a while when
the activator (console/activator.py) started it."""

from __future__ import annotations

import logging
import socket
import time

from hivemind.console.app import create_app
from hivemind.console.auth import Credentials, credentials
from hivemind_celery.core import Settings, payload_redis
from hivemind_celery.observability import attach_problem_log

log = logging.getLogger("hivemind.console")


def prepare(settings: Settings, host: str) -> tuple[object, Credentials]:
    """The app and its credentials; raises ConsoleConfigError off loopback without a password."""
    creds = credentials(settings, host)
    return create_app(settings, payload_redis(settings), creds), creds


# uvicorn's server wakes ten times a second to look for a stop request and to
# refresh its Date header (which it does only every tenth wake). An idle console
# should not cost the lender that: wake once a second, as often as the header
# changes; a stop takes effect within that second.
TICK_SECONDS = 1.0


class IdleWatch:
    """How long the server has had nothing to do: no new request, no open
    connection (a browser's keep-alive one included) and no response being sent."""

    def __init__(self, now: float) -> None:
        self.requests = 0
        self.active_at = now

    def idle_for(self, requests: int, busy: bool, now: float) -> float:
        if busy or requests != self.requests:
            self.requests, self.active_at = requests, now
        return now - self.active_at


def serve(settings: Settings, host: str, listener: socket.socket, idle_exit: float = 0.0) -> None:
    """Serves until stopped, or, with `idle_exit` > 0, until that many seconds pass
    with nothing to do (then returns: the activator serves the port meanwhile).
    Exits 3 when the server did not start."""
    import asyncio

    import uvicorn

    class CalmServer(uvicorn.Server):
        async def main_loop(self) -> None:
            counter = 0  # on_tick refreshes the headers when counter % 10 == 0: every tick here
            should_exit = await self.on_tick(counter)
            while not should_exit:
                counter = (counter + 10) % 864000
                await asyncio.sleep(TICK_SECONDS)
                should_exit = await self.on_tick(counter)

        async def on_tick(self, counter: int) -> bool:
            if await super().on_tick(counter):
                return True
            if idle_exit <= 0:
                return False
            # No await between this decision and uvicorn's shutdown closing the
            # listener: a connection that comes now stays in the backlog for the
            # activator, it is not accepted and then dropped.
            state = self.server_state
            idle = watch.idle_for(state.total_requests, bool(state.connections or state.tasks), time.monotonic())
            if idle < idle_exit:
                return False
            log.info("idle for %.0f s: exiting until the next connection", idle)
            return True

    app, _ = prepare(settings, host)
    attach_problem_log(settings, "console")
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_level="warning",
        proxy_headers=False,
        server_header=False,
    )
    watch = IdleWatch(time.monotonic())
    server = CalmServer(config)
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:
        pass
    if not server.started:
        raise SystemExit(3)  # as uvicorn.run: the app failed to start
