"""The console the activator starts: `python -m hivemind.console --fd N --host H
--idle-exit S` serves on the inherited listening socket N and exits after S
seconds with nothing to do (console/activator.py starts the next one). Not for
people: `hivemind console` is."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hivemind.console")
    parser.add_argument("--fd", type=int, required=True, help="the inherited listening socket")
    parser.add_argument("--host", required=True, help="the address it listens on (loopback or not decides the login)")
    parser.add_argument("--idle-exit", type=float, default=0.0, help="exit after this many idle seconds; 0: never")
    args = parser.parse_args(argv)

    import socket

    from pydantic import ValidationError

    from hivemind.console.activator import listening_socket
    from hivemind_celery.core import HivemindError, get_settings
    from hivemind_celery.observability import configure_logging

    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"error: the console's settings are not valid: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    listener: socket.socket = listening_socket(args.fd)
    try:
        from hivemind.console.serve import serve

        serve(settings, args.host, listener, args.idle_exit)
    except HivemindError as exc:
        logging.getLogger("hivemind.console").error("the console cannot start: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
