"""`python -m bridge`: run the bridge until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys

from bridge.config import ConfigError


def main() -> int:
    from bridge.server import Bridge
    from hivemind_celery.logs import configure_logging
    from hivemind_celery.settings import get_settings

    settings = get_settings()
    configure_logging(settings)
    try:
        bridge = Bridge(settings)
    except ConfigError as exc:
        logging.getLogger("bridge").error("%s", exc)
        return 2
    bridge.start()

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("bridge").info("signal %d: stopping", signum)
        bridge.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    bridge.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
