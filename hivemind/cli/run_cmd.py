"""`hivemind run`: run one task on this site without a Node Pool."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from hivemind.cli.common import parse_memory_mb, read_task_zip

console = Console(stderr=True)


def run(
    path: Path = typer.Argument(..., help="A task zip, or a directory to zip."),
    gpu: bool = typer.Option(False, "--gpu", help="Ask for one GPU (sent to the gpu queue)."),
    cpus: float = typer.Option(1.0, "--cpus", help="CPU cores to reserve."),
    memory: str = typer.Option("512m", "--memory", help="Memory limit, e.g. 512m or 2g."),
    timeout: float | None = typer.Option(None, "--timeout", help="Seconds before the task is stopped."),
    image: str | None = typer.Option(None, "--image", help="Task image (must be allowed)."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write the result zip here."),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
    wait: float = typer.Option(24 * 3600.0, "--wait-limit", help="Seconds to wait for the outcome."),
) -> None:
    """Send one task through Celery to a running worker and wait for its outcome."""
    # Imported here so that `hivemind --help` does not need Redis or Celery.
    from pydantic import ValidationError

    from hivemind_celery.client import create_client, send_run_task
    from hivemind_celery.core import TaskSpec
    from hivemind_celery.payloads import PayloadError, PayloadStore
    from hivemind_celery.task import celery_outcome

    store = PayloadStore.from_settings()
    try:
        ref = store.put(read_task_zip(path))
        spec = TaskSpec(
            task_id=f"run-{uuid.uuid4().hex[:12]}",
            payload=ref,
            image=image,
            cpus=cpus,
            memory_mb=parse_memory_mb(memory),
            gpus=1 if gpu else 0,
            timeout=timeout,
            owner="hivemind-run",
        )
    except (PayloadError, ValidationError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    celery = create_client()
    try:
        result = send_run_task(celery, spec)
        with console.status(f"task {spec.task_id} on queue {spec.queue.value}…"):
            outcome = celery_outcome(result, wait)
    finally:
        celery.close()
    if output is not None and outcome.result_ref:
        output.write_bytes(store.get(outcome.result_ref))
    if as_json:
        typer.echo(json.dumps(outcome.model_dump(mode="json") | {"duration": outcome.duration}))
    else:
        show(outcome, output)
    raise typer.Exit(0 if outcome.succeeded else 1)


def show(outcome, output: Path | None) -> None:
    table = Table(show_header=False, box=None)
    table.add_row("task", outcome.task_id)
    table.add_row("status", f"[bold]{outcome.status.value}[/bold]")
    table.add_row("exit code", str(outcome.exit_code))
    table.add_row("duration", f"{outcome.duration:.2f}s")
    if outcome.reason:
        table.add_row("reason", outcome.reason)
    if outcome.usage is not None:
        table.add_row("cpu seconds", f"{outcome.usage.cpu_seconds:.2f}")
        table.add_row("peak memory", f"{outcome.usage.memory_peak_bytes / 2**20:.1f} MiB")
    if outcome.reward is not None:
        table.add_row("reward", f"{outcome.reward} CPT")
    if output is not None:
        table.add_row("result zip", str(output))
    Console().print(table)
    if outcome.log_tail:
        Console().print("[dim]--- output (tail) ---[/dim]")
        Console().print(outcome.log_tail, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
