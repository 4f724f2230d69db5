"""`hivemind console`: serve the contributor's web console."""

from __future__ import annotations

import typer

from hivemind.cli.common import fail


def console(
    host: str | None = typer.Option(None, help="Address to listen on (default HIVEMIND_CONSOLE_HOST, 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default HIVEMIND_CONSOLE_PORT, 5001)."),
    always_on: bool = typer.Option(
        False,
        "--always-on",
        help="Keep the console running while nobody uses it (HIVEMIND_CONSOLE_IDLE_EXIT=0 does the same).",
    ),
) -> None:
    """Serve the web console: what this site runs, its charts and history, and your preferences.

    The port is held at once; the console itself runs from the first connection until
    HIVEMIND_CONSOLE_IDLE_EXIT seconds pass with no request, unless --always-on."""
    from hivemind.console.auth import ConsoleConfigError, credentials
    from hivemind.console.listener import ListenError, bind_listener, hand_over, shown
    from hivemind_celery.core import get_settings
    from hivemind_celery.observability import configure_logging

    settings = get_settings()
    host = host or settings.console_host
    port = port or settings.console_port
    configure_logging(settings)
    try:
        creds = credentials(settings, host)
        listener = bind_listener(host, port)
    except (ConsoleConfigError, ListenError) as exc:
        raise fail(str(exc)) from None
    typer.echo(f"HiveMind console on http://{shown(host, port)}/")
    if creds.generated:
        typer.echo(f"password (generated, kept in {creds.password_file}): {creds.password}")
    elif creds.password_file is not None:
        typer.echo(f"password: the one kept in {creds.password_file}")
    idle_exit = 0.0 if always_on else settings.console_idle_exit
    if idle_exit > 0:
        typer.echo(
            f"It starts at the first connection (that page takes about a second) and stops after "
            f"{idle_exit:g} s without one; --always-on keeps it running."
        )
        hand_over(listener, host, idle_exit)
    from hivemind.console.serve import serve

    serve(settings, host, listener)


def register(app: typer.Typer) -> None:
    app.command("console")(console)
