"""`hivemind nodepool` (serve this project's Node Pool) and `hivemind users ...`
(accounts, written straight into the pool's SQLite database at HIVEMIND_NODEPOOL_DB)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()

users_app = typer.Typer(no_args_is_help=True, help="Node Pool accounts (works on the pool's database directly).")


def _store(db: Path | None):  # noqa: ANN202 - nodepool is imported lazily
    from nodepool.settings import NodePoolSettings
    from nodepool.store import Store

    return Store(db or NodePoolSettings().db)


@users_app.command("add")
def users_add(
    name: str = typer.Argument(..., help="User name; a worker's user name is its node id."),
    password: str = typer.Option(
        ...,
        "--password",
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        help="At least 8 characters (prompted when left out).",
    ),
    balance: int = typer.Option(0, "--balance", min=0, help="Starting CPT balance."),
    db: Path | None = typer.Option(None, "--db", help="Pool database (default: HIVEMIND_NODEPOOL_DB)."),
) -> None:
    """Add a user account to the Node Pool."""
    from nodepool import accounts
    from nodepool.errors import Refused

    store = _store(db)
    try:
        accounts.create_user(store, name, password, balance)
    except Refused as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    finally:
        store.close()
    console.print(f"added user [bold]{name}[/bold] with {balance} CPT")


@users_app.command("list")
def users_list(
    db: Path | None = typer.Option(None, "--db", help="Pool database (default: HIVEMIND_NODEPOOL_DB)."),
) -> None:
    """List accounts and balances."""
    store = _store(db)
    try:
        rows = store.conn.execute("SELECT username, balance FROM users ORDER BY username").fetchall()
    finally:
        store.close()
    table = Table("user", "balance (CPT)")
    for row in rows:
        table.add_row(row["username"], str(row["balance"]))
    console.print(table)


def nodepool(
    port: int | None = typer.Option(None, "--port", help="gRPC port (default: HIVEMIND_NODEPOOL_PORT, 50051)."),
    db: Path | None = typer.Option(None, "--db", help="SQLite database (default: HIVEMIND_NODEPOOL_DB)."),
) -> None:
    """Serve this project's Node Pool until interrupted."""
    from hivemind_celery.core import Settings
    from nodepool import logs
    from nodepool.server import serve
    from nodepool.settings import NodePoolSettings

    site = Settings()
    logs.configure(site.log_level, site.log_json)
    overrides: dict[str, Any] = {k: v for k, v in {"port": port, "db": db}.items() if v is not None}
    serve(NodePoolSettings(**overrides))


def register(app: typer.Typer) -> None:
    app.command("nodepool")(nodepool)
    app.add_typer(users_app, name="users")
