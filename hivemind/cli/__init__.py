"""`hivemind`: the site's command line. Each module under cli/ adds its own
commands through a `register(app)` function, so the parts stay apart."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="HiveMind worker site.")


@app.callback()
def _group() -> None:
    """HiveMind worker site: run workers, the bridge, a Node Pool, and tasks."""


# Modules that add commands; each has register(app: typer.Typer).
COMMAND_MODULES = [
    "hivemind.cli.run_cmd",
    "hivemind.cli.bridge_cmd",
    "hivemind.cli.nodepool_cmds",
    "hivemind.cli.task_cmds",
    "hivemind.cli.demo_cmd",
    "hivemind.cli.site_cmds",
    "hivemind.cli.prefs_cmds",
    "hivemind.cli.console_cmd",
    "hivemind.cli.vpn_cmds",
]

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    app()
