"""Serving the console with uvicorn (`hivemind console`)."""

from __future__ import annotations

import logging

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


def serve(settings: Settings, host: str, port: int) -> None:
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

    app, _ = prepare(settings, host)
    attach_problem_log(settings, "console")
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level="warning",
        proxy_headers=False,
        server_header=False,
    )
    server = CalmServer(config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        raise SystemExit(3)  # as uvicorn.run: the port was taken or the app failed to start
