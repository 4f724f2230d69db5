"""`python -m bridge` (and `hivemind bridge`): run the bridge until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys

from hivemind_celery.core import Settings, get_settings

log = logging.getLogger("bridge")


def run(settings: Settings) -> int:
    """Run a bridge in the foreground; 2 when the configuration cannot work."""
    from bridge.config import ConfigError
    from bridge.server import Bridge
    from hivemind_celery.observability import attach_problem_log, configure_logging
    from vpn.errors import TunnelError

    configure_logging(settings)
    attach_problem_log(settings, "bridge", settings.username)
    try:
        bridge = Bridge(settings)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    try:
        bridge.start()
    except TunnelError as exc:
        # The tunnel could not be joined or brought up: say why, once, and leave nothing running.
        log.error("tunnel: %s", exc, extra={"node_id": bridge.config.node_id})
        bridge.stop()
        return 1

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum, extra={"node_id": bridge.config.node_id})
        bridge.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    bridge.wait()
    return 0


if __name__ == "__main__":
    sys.exit(run(get_settings()))
