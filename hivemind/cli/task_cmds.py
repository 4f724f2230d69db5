"""The task owner's commands against a Node Pool: submit, status, logs, result, stop,
balance, transfer. They log in with HIVEMIND_USERNAME / HIVEMIND_PASSWORD at
HIVEMIND_NODEPOOL_ADDRESS (see hivemind/pool_client.py)."""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from pathlib import Path

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from hivemind.cli.common import fail, read_task_zip
from hivemind.pool_client import PoolClient, PoolError
from proto import nodepool_pb2 as pb

console = Console(stderr=True)
out = Console()

FINAL = {"COMPLETED", "FAILED", "STOPPED"}
ONE_GPU_SCORE = 100  # the bridge's default GPU score per GPU: --gpu asks for one GPU
ONE_CORE_SCORE = 100  # likewise for one CPU core
REPORT_NAME = "execution_report.json"


def _client() -> PoolClient:
    try:
        return PoolClient.from_settings()
    except PoolError as exc:
        raise fail(str(exc)) from None


def read_report(result: bytes) -> dict | None:
    try:
        with zipfile.ZipFile(io.BytesIO(result)) as archive:
            report = json.loads(archive.read(REPORT_NAME))
    except (KeyError, zipfile.BadZipFile, ValueError):
        return None
    return report if isinstance(report, dict) else None


def _task_table(tasks: list[pb.TaskInfo]) -> Table:
    table = Table("task", "status", "message", "cpu %", "mem %", "gpu %", "worker")
    colours = {"COMPLETED": "green", "FAILED": "red", "STOPPED": "yellow", "RUNNING": "cyan"}
    for t in tasks:
        colour = colours.get(t.status, "white")
        table.add_row(
            t.task_id,
            f"[{colour}]{t.status}[/{colour}]",
            t.message,
            f"{t.cpu_usage:.0f}",
            f"{t.memory_usage:.0f}",
            f"{t.gpu_usage:.0f}",
            t.worker_ip,
        )
    return table


def new_output(old: str, new: str) -> str:
    """The part of `new` not yet shown, given the pool keeps only a tail of the output."""
    if new.startswith(old):
        return new[len(old) :]
    tail = old[-1024:]
    index = new.rfind(tail) if tail else -1
    return new[index + len(tail) :] if index >= 0 else new


def _wait(client: PoolClient, task_id: str, poll_s: float, quiet: bool) -> pb.TaskInfo:
    """Poll until the task ends, showing a live table unless `quiet`."""
    started = time.monotonic()
    with Live(console=console, transient=True, auto_refresh=False) as live:
        while True:
            info = client.task(task_id)
            if not quiet:
                elapsed = time.monotonic() - started
                table = _task_table([info])
                table.caption = f"waiting {elapsed:.0f} s; Ctrl-C stops waiting (the task keeps running)"
                live.update(table, refresh=True)
            if info.status in FINAL:
                return info
            time.sleep(poll_s)


def _result_after_end(client: PoolClient, info: pb.TaskInfo, grace_s: float) -> bytes | None:
    """The result zip; a stopped task's result may follow its status by a little."""
    deadline = time.monotonic() + grace_s
    while True:
        data = client.result(info.task_id)
        if data is not None or time.monotonic() >= deadline or info.message.startswith("node "):
            return data
        time.sleep(0.5)


def submit(
    path: Path = typer.Argument(..., help="A task zip, or a directory to zip."),
    gpu: bool = typer.Option(False, "--gpu", help="Ask for one GPU."),
    memory: int = typer.Option(1, "--memory", min=0, help="Memory in GB."),
    cpu_score: int = typer.Option(ONE_CORE_SCORE, "--cpu-score", min=0, help="CPU score (100 per core)."),
    gpu_memory: int = typer.Option(0, "--gpu-memory", min=0, help="GPU memory in GB (implies a GPU task)."),
    gpu_name: str = typer.Option("", "--gpu-name", help="GPU model the node must have (empty: any)."),
    task_id: str | None = typer.Option(None, "--task-id", help="Task id (default: a new random one)."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the task to end and show its outcome."),
    as_json: bool = typer.Option(False, "--json", help="With --wait: print the final status as JSON."),
    poll: float = typer.Option(1.0, "--poll", min=0.05, help="Seconds between status checks while waiting."),
) -> None:
    """Upload a task to the Node Pool."""
    data = read_task_zip(path)
    task_id = task_id or f"task-{uuid.uuid4().hex[:16]}"
    request = pb.UploadTaskRequest(
        task_id=task_id,
        task_zip=data,
        memory_gb=memory,
        cpu_score=cpu_score,
        gpu_score=ONE_GPU_SCORE if gpu else 0,
        gpu_memory_gb=gpu_memory,
        gpu_name=gpu_name,
    )
    with _client() as client:
        try:
            request.token = client.token
            reply = client.call(client.master.UploadTask, request, timeout_s=300)
            if not reply.success:
                raise fail(f"upload refused: {reply.message}")
            if not wait:
                if as_json:
                    out.print_json(json.dumps({"task_id": task_id, "status": "PENDING", "message": reply.message}))
                else:
                    console.print(f"submitted [bold]{task_id}[/bold] ({len(data)} bytes)")
                return
            info = _wait(client, task_id, poll, quiet=as_json)
            result = _result_after_end(client, info, grace_s=10.0)
            info = client.task(task_id)
        except PoolError as exc:
            raise fail(str(exc)) from None
    report = read_report(result) if result else None
    if as_json:
        out.print_json(json.dumps({"task_id": task_id, "status": info.status, "message": info.message, "report": report}))
    else:
        out.print(_task_table([info]))
        if report is not None:
            out.print(
                f"exit code {report.get('exit_code')}, reward {report.get('reward')} CPT; "
                f"fetch files with: hivemind result {task_id} -o {task_id}.zip"
            )
    if info.status != "COMPLETED":
        raise typer.Exit(code=1)


def status(task_id: str | None = typer.Argument(None, help="One task (default: all of yours).")) -> None:
    """Show your tasks on the Node Pool."""
    with _client() as client:
        try:
            tasks = [client.task(task_id)] if task_id else client.tasks()
        except PoolError as exc:
            raise fail(str(exc)) from None
    out.print(_task_table(tasks))


def logs(
    task_id: str = typer.Argument(..., help="The task."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output until the task ends."),
    poll: float = typer.Option(1.0, "--poll", min=0.05, help="Seconds between checks with --follow."),
) -> None:
    """Print a task's output (the pool keeps its latest part)."""
    with _client() as client:
        try:
            shown = client.log(task_id)
            out.print(shown, end="", markup=False, highlight=False)
            while follow and client.task(task_id).status not in FINAL:
                time.sleep(poll)
                latest = client.log(task_id)
                out.print(new_output(shown, latest), end="", markup=False, highlight=False)
                shown = latest
            if follow:
                out.print(new_output(shown, client.log(task_id)), end="", markup=False, highlight=False)
        except PoolError as exc:
            raise fail(str(exc)) from None


def result(
    task_id: str = typer.Argument(..., help="The task."),
    output: Path = typer.Option(..., "-o", "--output", help="Write the result zip here."),
) -> None:
    """Download a task's result zip."""
    with _client() as client:
        try:
            data = client.result(task_id)
            if data is None:
                raise fail(f"no result for {task_id} yet (status {client.task(task_id).status})")
        except PoolError as exc:
            raise fail(str(exc)) from None
    output.write_bytes(data)
    report = read_report(data)
    summary = f"; status {report.get('status')}, reward {report.get('reward')} CPT" if report else ""
    console.print(f"wrote {output} ({len(data)} bytes){summary}")


def stop(task_id: str = typer.Argument(..., help="The task.")) -> None:
    """Stop a task (its result, with what it produced, still arrives)."""
    with _client() as client:
        try:
            reply = client.call(client.master.StopTask, pb.StopTaskRequest(task_id=task_id, token=client.token), timeout_s=60)
        except PoolError as exc:
            raise fail(str(exc)) from None
    if not reply.success:
        raise fail(reply.message)
    console.print(f"{task_id}: {reply.message}")


def balance() -> None:
    """Show your CPT balance."""
    with _client() as client:
        try:
            reply = client.call(client.users.GetBalance, pb.GetBalanceRequest(token=client.token))
        except PoolError as exc:
            raise fail(str(exc)) from None
    if not reply.success:
        raise fail(reply.message)
    out.print(f"{reply.balance} CPT")


def transfer(
    receiver: str = typer.Argument(..., help="User to send CPT to."),
    amount: int = typer.Argument(..., min=1, help="Whole CPT."),
) -> None:
    """Send CPT to another user."""
    with _client() as client:
        try:
            reply = client.call(
                client.users.Transfer, pb.TransferRequest(token=client.token, receiver_username=receiver, amount=amount)
            )
        except PoolError as exc:
            raise fail(str(exc)) from None
    if not reply.success:
        raise fail(reply.message)
    console.print(reply.message)


def register(app: typer.Typer) -> None:
    for command in (submit, status, logs, result, stop, balance, transfer):
        app.command(command.__name__)(command)
