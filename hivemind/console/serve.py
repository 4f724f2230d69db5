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


def serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    app, _ = prepare(settings, host)
    attach_problem_log(settings, "console")
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False, server_header=False)  # type: ignore[arg-type]
