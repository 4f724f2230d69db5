"""`hivemind demo`: start a whole site on this machine, run the bundled examples
through it, and show what happened. The README's `make demo` runs this."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console


def demo(
    keep_running: bool = typer.Option(
        False, "--keep-running", help="After the examples, exit and leave the site running (stop: --stop)."
    ),
    exit_when_done: bool = typer.Option(
        False, "--exit-when-done", help="Stop the site and exit once the examples have finished."
    ),
    stop: bool = typer.Option(False, "--stop", help="Stop a site left up by --keep-running, then exit."),
    runtime: str | None = typer.Option(
        None,
        "--runtime",
        help="docker or process (default: docker, starting dockerd when it is installed but "
        "not running; process, with a warning, only when Docker cannot run here).",
    ),
    task_timeout: float = typer.Option(
        20.0,
        "--task-timeout",
        min=1.0,
        help="Seconds a task may run on the demo's worker (HIVEMIND_DEFAULT_TIMEOUT); slow_task outlives it.",
    ),
    flower: bool = typer.Option(True, "--flower/--no-flower", help="Start Flower when it is installed."),
    concurrency: int = typer.Option(2, "--concurrency", min=1, help="Tasks the cpu worker runs at once."),
    max_wait: float = typer.Option(900.0, "--max-wait", min=10.0, help="Seconds to wait for the examples."),
    only: list[str] = typer.Option(
        [], "--only", help="Run only this example (repeatable): cpu_task, requirements_task, failing_task, slow_task, gpu_task."
    ),
    state_dir: Path = typer.Option(Path(".hivemind"), "--dir", help="Where the demo keeps data, logs and results."),
) -> None:
    """Run a whole HiveMind site here (Redis, Node Pool, bridge, Celery workers, Flower),
    submit the bundled examples and show their outcomes. Starts dockerd if it is installed
    but not running (and stops it after). Ctrl-C stops everything."""
    from hivemind.demo.runner import DemoOptions, run_demo, stop_kept_site

    console = Console()
    if keep_running and exit_when_done:
        raise typer.BadParameter("--keep-running and --exit-when-done contradict each other")
    if runtime not in (None, "docker", "process"):
        raise typer.BadParameter(f"--runtime must be docker or process, not {runtime!r}")
    from hivemind.demo.catalog import EXAMPLES

    unknown = sorted(set(only) - {example.name for example in EXAMPLES})
    if unknown:
        raise typer.BadParameter(
            f"no example named {', '.join(unknown)}; the examples are {', '.join(e.name for e in EXAMPLES)}", param_hint="--only"
        )
    if stop:
        raise typer.Exit(stop_kept_site(state_dir, console))
    if sys.platform != "linux":
        console.print("[yellow]The demo is made for Linux; on other systems parts may not start.[/yellow]")
    options = DemoOptions(
        base=state_dir,
        keep_running=keep_running,
        exit_when_done=exit_when_done,
        runtime=runtime,
        task_timeout=task_timeout,
        flower=flower,
        max_wait=max_wait,
        concurrency=concurrency,
        only=tuple(only),
    )
    raise typer.Exit(run_demo(options, console))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
