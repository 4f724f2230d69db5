"""`hivemind workers` and `hivemind health`: the site's workers, this machine's fitness."""

from __future__ import annotations

import json
import time

import typer
from rich.console import Console
from rich.table import Table


def workers(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the live workers of the site and its total and free capacity."""
    import redis

    from hivemind_celery.core import get_settings, payload_redis
    from hivemind_celery.site import Registry

    settings = get_settings()
    registry = Registry(payload_redis(settings))
    try:
        live = registry.workers()
        cap = registry.capacity()
    except redis.RedisError as exc:
        typer.echo(f"error: cannot read the registry: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "workers": [
                        {
                            **w.capacity.as_dict(),
                            "registered_at": w.registered_at,
                            "last_heartbeat": w.last_heartbeat,
                            "deadline": w.deadline,
                        }
                        for w in live
                    ],
                    "capacity": cap.__dict__,
                },
                indent=2,
            )
        )
        return
    now = time.time()
    table = Table(title=f"{cap.workers} live worker(s)")
    for column in ("worker", "host", "queues", "CPUs", "memory", "GPUs", "last beat"):
        table.add_column(column, justify="right" if column in ("CPUs", "memory", "GPUs", "last beat") else "left")
    for w in live:
        c = w.capacity
        gpus = f"{c.gpus} ({', '.join(sorted(set(c.gpu_names)))})" if c.gpus else "0"
        table.add_row(
            c.worker_id,
            c.hostname,
            ",".join(c.queues),
            f"{c.cpus:g}",
            f"{c.memory_mb} MiB",
            gpus,
            f"{max(0.0, now - w.last_heartbeat):.0f}s ago",
        )
    console = Console()
    console.print(table)
    console.print(
        f"CPUs {cap.cpus_free:g} free of {cap.cpus_total:g} · memory {cap.memory_mb_free} of "
        f"{cap.memory_mb_total} MiB free · GPUs {cap.gpus_free} of {cap.gpus_total} free · "
        f"{cap.allocations} task(s) holding resources"
    )


def health(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    docker: bool | None = typer.Option(None, "--docker/--no-docker", help="Check dockerd (default: when the runtime is docker)."),
) -> None:
    """Check Redis, Docker, disk and memory; exit 1 when anything fails."""
    from hivemind_celery.core import get_settings
    from hivemind_celery.observability import check_health

    report = check_health(get_settings(), docker=docker)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        console = Console()
        for check in report.checks:
            mark = "[green]ok[/green]  " if check.ok else "[red]FAIL[/red]"
            console.print(f"{mark} {check.name:<7} {check.detail}", highlight=False)
        console.print("[green]healthy[/green]" if report.healthy else "[red]unhealthy[/red]")
    if not report.healthy:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("workers")(workers)
    app.command("health")(health)
