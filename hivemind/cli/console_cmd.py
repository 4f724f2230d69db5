"""`hivemind console`: serve the contributor's web console."""

from __future__ import annotations

import typer

from hivemind.cli.common import fail


def console(
    host: str | None = typer.Option(None, help="Address to listen on (default HIVEMIND_CONSOLE_HOST, 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default HIVEMIND_CONSOLE_PORT, 5001)."),
) -> None:
    """Serve the web console: what this site runs, its charts and history, and your preferences."""
    from hivemind.console.auth import ConsoleConfigError, credentials
    from hivemind.console.serve import serve
    from hivemind_celery.core import get_settings
    from hivemind_celery.observability import configure_logging

    settings = get_settings()
    host = host or settings.console_host
    port = port or settings.console_port
    configure_logging(settings)
    try:
        creds = credentials(settings, host)
    except ConsoleConfigError as exc:
        raise fail(str(exc)) from None
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"HiveMind console on http://{shown}:{port}/")
    if creds.generated:
        typer.echo(f"password (generated, kept in {creds.password_file}): {creds.password}")
    elif creds.password_file is not None:
        typer.echo(f"password: the one kept in {creds.password_file}")
    serve(settings, host, port)


def register(app: typer.Typer) -> None:
    app.command("console")(console)
