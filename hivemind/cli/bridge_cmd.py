"""`hivemind bridge`: join a Node Pool and take its tasks onto this site."""

from __future__ import annotations

from typing import Any

import typer


def bridge(
    nodepool: str | None = typer.Option(None, "--nodepool", help="Node Pool host:port [HIVEMIND_NODEPOOL_ADDRESS]."),
    username: str | None = typer.Option(None, "--username", help="Worker account [HIVEMIND_USERNAME]."),
    port: int | None = typer.Option(None, "--port", help="Port to serve on [HIVEMIND_BRIDGE_PORT]."),
    advertise_host: str | None = typer.Option(
        None, "--advertise-host", help="Host the pool dials back [HIVEMIND_ADVERTISE_HOST]."
    ),
) -> None:
    """Run the bridge in the foreground. The password comes from HIVEMIND_PASSWORD only,
    so it never shows in the process list."""
    from bridge.__main__ import run
    from hivemind_celery.core import Settings

    overrides: dict[str, Any] = {
        "nodepool_address": nodepool,
        "username": username,
        "bridge_port": port,
        "advertise_host": advertise_host,
    }
    settings = Settings(**{key: value for key, value in overrides.items() if value is not None})
    raise typer.Exit(run(settings))


def register(app: typer.Typer) -> None:
    app.command("bridge")(bridge)
