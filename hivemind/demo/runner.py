"""The whole demo run: check the machine, start the site, make the accounts,
submit the examples, follow them, show the outcomes, stop (or stay up)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel

from hivemind.demo import dockerd, services
from hivemind.demo.catalog import EXAMPLES, examples_dir, read_report, zip_folder
from hivemind.demo.paths import Credentials, DemoPaths, read_json, write_private
from hivemind.demo.preflight import FLOWER_FIX, Preflight, check, ensure_image
from hivemind.demo.procs import (
    ChildFailed,
    Supervisor,
    group_alive,
    pick_port,
    stop_group,
)
from hivemind.demo.report import Tracked, notes, outcome_table, progress_table
from hivemind.pool_client import PoolClient, PoolError
from hivemind_celery.core import HivemindError

DEFAULT_PORTS = {"redis": 6379, "nodepool": 50051, "bridge": 50053, "flower": 5555, "console": 5001}
DEMO_BALANCE = 1_000_000  # CPT the demo user starts with; it pays for its own tasks


@dataclass
class DemoOptions:
    base: Path
    keep_running: bool = False
    exit_when_done: bool = False
    runtime: str | None = None  # None: docker when usable, else process
    task_timeout: float = 20.0
    flower: bool = True
    max_wait: float = 900.0
    concurrency: int = 2
    only: tuple[str, ...] = ()  # example names; empty: all of them


@dataclass
class Site:
    """What is running, as saved in .hivemind/demo-site.json."""

    redis_url: str = ""
    nodepool: str = ""
    bridge: str = ""
    flower: str = ""
    console: str = ""
    runtime: str = ""
    worker_ids: list[str] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)
    dockerd_bridge: str = ""  # made for a dockerd the demo started on its own socket


class Interrupted(HivemindError):
    """SIGINT, SIGTERM or SIGHUP reached the demo."""


def _on_signal(signum: int, _frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def shown(path: Path) -> str:
    """A path as short as it can be said: relative to here when under here."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def repo_root() -> Path:
    import hivemind

    return Path(hivemind.__file__).resolve().parents[1]


def ensure_accounts(paths: DemoPaths, creds: Credentials) -> list[str]:
    """The demo user and the site's worker account, made once, passwords kept
    in step with the credentials file. Returns what it did, in words."""
    from nodepool import accounts
    from nodepool.errors import Refused
    from nodepool.store import Store

    done = []
    store = Store(paths.nodepool_db)
    try:
        for name, password, balance in ((creds.user, creds.password, DEMO_BALANCE), (creds.worker, creds.worker_password, 0)):
            try:
                accounts.create_user(store, name, password, balance)
                done.append(f"created Node Pool user {name!r}")
            except Refused:
                accounts.set_password(store, name, password)  # exists: make sure it matches our file
    finally:
        store.close()
    return done


def stop_leftover_site(paths: DemoPaths, console: Console) -> None:
    """Stop what a killed or --keep-running demo left running here."""
    saved = read_json(paths.site) or {}
    pids = saved.get("pids", {}) if isinstance(saved.get("pids"), dict) else {}
    order = ["console", "flower", "bridge", "worker-gpu", "worker-cpu", "nodepool", "redis", "dockerd"]
    for name in sorted(pids, key=lambda n: order.index(n) if n in order else -1):
        pid = pids[name]
        if isinstance(pid, int) and pid > 1 and group_alive(pid):
            console.print(f"stopping {name} (pid {pid}) left from an earlier run")
            polite = (signal.SIGTERM, signal.SIGQUIT) if name.startswith("worker") else (signal.SIGTERM,)
            stop_group(pid, dockerd.STOP_GRACE if name == "dockerd" else 8.0, polite)
    if isinstance(saved.get("dockerd_bridge"), str):
        dockerd.remove_bridge(saved["dockerd_bridge"])
    paths.site.unlink(missing_ok=True)


def save_site(paths: DemoPaths, site: Site, sup: Supervisor) -> None:
    site.pids = {child.name: child.pid for child in sup.children}
    write_private(paths.site, json.dumps(site.__dict__, indent=2) + "\n")


def start_dockerd(pre: Preflight, paths: DemoPaths, site: Site, sup: Supervisor, console: Console) -> None:
    """When Docker is installed but not running: start it (stopped with the site)."""
    if pre.docker is None or pre.docker.action != "start":
        return
    child, site.dockerd_bridge = dockerd.start(pre.docker, sup, paths.root, say=console.print)
    save_site(paths, site, sup)
    with console.status("waiting for dockerd…"):
        dockerd.wait_ready(pre.docker.host, child)
    console.print(f"[green]✓[/green] dockerd on {pre.docker.host.socket} (started by the demo)")


def start_site(
    opts: DemoOptions, paths: DemoPaths, creds: Credentials, pre: Preflight, sup: Supervisor, site: Site, console: Console
) -> Site:
    root = repo_root()
    env = services.base_env(root)
    site.runtime = pre.runtime
    taken: set[int] = set()

    def port(name: str) -> int:
        chosen = pick_port(DEFAULT_PORTS[name], taken)
        taken.add(chosen)
        if chosen != DEFAULT_PORTS[name]:
            console.print(f"[dim]port {DEFAULT_PORTS[name]} is busy; {name} uses {chosen}[/dim]")
        return chosen

    with console.status("starting Redis…"):
        site.redis_url = services.start_redis(sup, paths, port("redis"), creds.redis_password, env)
    save_site(paths, site, sup)
    console.print(f"[green]✓[/green] Redis (data in {paths.redis})")
    env = env | {"REDIS_URL": site.redis_url}
    with console.status("starting the Node Pool…"):
        site.nodepool = services.start_nodepool(sup, paths, port("nodepool"), env, root)
    save_site(paths, site, sup)
    console.print(f"[green]✓[/green] Node Pool on {site.nodepool} (database {paths.nodepool_db})")
    with console.status("starting the bridge…"):
        site.bridge = services.start_bridge(sup, port("bridge"), site.nodepool, creds.worker, creds.worker_password, env, root)
    save_site(paths, site, sup)
    console.print(f"[green]✓[/green] bridge on {site.bridge}, node {creds.worker!r}")

    from hivemind_celery.client import create_client
    from hivemind_celery.core import Settings

    worker_env = env | {
        "HIVEMIND_RUNTIME": pre.runtime,
        "HIVEMIND_TASK_IMAGE": pre.task_image,
        "HIVEMIND_DEFAULT_TIMEOUT": str(opts.task_timeout),
    }
    app = create_client(Settings(redis_url=site.redis_url))
    # Unique per state folder: two demos on one host must not reap each other's containers.
    host = f"{socket.gethostname().split('.')[0]}-{hashlib.sha1(str(paths.root).encode()).hexdigest()[:6]}"
    queues = ["cpu"] + (["gpu"] if pre.gpus else [])
    try:
        for queue in queues:
            spec = services.WorkerSpec(queue, opts.concurrency if queue == "cpu" else 1, f"demo-{queue}-{host}")
            with console.status(f"starting the Celery worker on queue {queue}…"):
                services.start_worker(sup, spec, worker_env, root, app)
            site.worker_ids.append(spec.worker_id)
            save_site(paths, site, sup)
            console.print(
                f"[green]✓[/green] Celery worker {spec.hostname} on queue {queue} "
                f"({pre.runtime} runtime, tasks stopped after {opts.task_timeout:.0f}s)"
            )
    finally:
        app.close()
    if opts.flower and services.flower_installed():
        with console.status("starting Flower…"):
            site.flower = services.start_flower(sup, port("flower"), creds.flower_user, creds.flower_password, env, root)
        save_site(paths, site, sup)
        console.print(f"[green]✓[/green] Flower on {site.flower} (user {creds.flower_user}, password {creds.flower_password})")
    elif opts.flower:
        console.print(f"[dim]Flower is not installed ({escape(FLOWER_FIX)}); skipping it[/dim]")
    with console.status("starting the console…"):
        site.console, console_password = services.start_console(
            sup, port("console"), paths.root / "console", site.nodepool, creds.worker, creds.worker_password, env, root
        )
    save_site(paths, site, sup)
    console.print(
        f"[green]✓[/green] console on {site.console} (password {console_password}, kept in {paths.root / 'console' / 'password'})"
    )
    return site


def write_env_file(paths: DemoPaths, site: Site, creds: Credentials) -> None:
    lines = [
        "# The demo site, for the hivemind CLI:  set -a; . .hivemind/demo.env; set +a",
        f"REDIS_URL={site.redis_url}",
        f"HIVEMIND_NODEPOOL_ADDRESS={site.nodepool}",
        f"HIVEMIND_USERNAME={creds.user}",
        f"HIVEMIND_PASSWORD={creds.password}",
    ]
    write_private(paths.env_file, "\n".join(lines) + "\n")


def stop_stale_tasks(client: PoolClient, console: Console) -> None:
    """Unfinished tasks of earlier demo runs would take the workers first."""
    for state in client.states().values():
        if not state.final and state.task_id.startswith("demo-"):
            console.print(
                f"[dim]stopping {state.task_id} ({state.status}) left from an earlier run: {client.stop(state.task_id)}[/dim]"
            )


def submit_examples(client: PoolClient, pre: Preflight, only: tuple[str, ...]) -> list[Tracked]:
    folder = examples_dir()
    rows = []
    run_id = uuid.uuid4().hex[:6]
    for example in EXAMPLES:
        if only and example.name not in only:
            continue
        row = Tracked(example)
        rows.append(row)
        if example.wants_gpu and not pre.gpus:
            row.skipped = "no GPU on this machine (NVML found none)"
            continue
        row.task_id = f"demo-{example.name.replace('_', '-')}-{run_id}"
        try:
            client.upload(row.task_id, zip_folder(folder / example.name), example.memory_gb, example.cpu_score, example.gpu_score)
        except PoolError as exc:
            row.error = str(exc)
            continue
        row.submitted_at = time.monotonic()
        row.pool_status = "PENDING"
    return rows


def follow(client: PoolClient, rows: list[Tracked], sup: Supervisor, paths: DemoPaths, console: Console, max_wait: float) -> None:
    deadline = time.monotonic() + max_wait
    with Live(progress_table(rows), console=console, refresh_per_second=2, transient=False) as live:
        while not all(row.done for row in rows):
            sup.check()
            if time.monotonic() > deadline:
                for row in rows:
                    if not row.done:
                        row.error = f"not finished after {max_wait:.0f}s (status {row.pool_status})"
                break
            states = client.states()
            for row in rows:
                if row.done or row.task_id not in states:
                    continue
                state = states[row.task_id]
                row.pool_status = state.status
                if state.final:
                    data = client.result(row.task_id)
                    if data is None:
                        row.error = f"ended {state.status} without a result zip: {state.message}"
                        continue
                    row.result_path = paths.results / f"{row.task_id}.zip"
                    row.result_path.write_bytes(data)
                    row.finished = read_report(data)
                if state.status == "RUNNING" or state.final:
                    # Read once more when it ends: a finished task keeps its last line.
                    lines = client.log(row.task_id).strip().splitlines()
                    row.last_line = lines[-1][:120] if lines else row.last_line
            live.update(progress_table(rows))
            time.sleep(1.0)
        live.update(progress_table(rows))
    if not console.is_terminal:
        console.line()  # off a terminal the last frame ends without one


def show_banner(console: Console, pre: Preflight) -> None:
    for note in pre.notes:
        console.print(f"[green]•[/green] {escape(note)}")
    for warning in pre.warnings:
        console.print(Panel(escape(warning), title="WARNING: NO ISOLATION", border_style="bold yellow"))
    if pre.gpus:
        console.print(f"[green]•[/green] GPU(s): {', '.join(pre.gpus)}: a gpu worker will run too")
    else:
        console.print("[dim]• no GPU found (NVML): gpu_task will be skipped[/dim]")


def run_demo(opts: DemoOptions, console: Console) -> int:
    paths = DemoPaths.under(opts.base)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    creds, generated = Credentials.load_or_create(paths.credentials)
    if generated:
        console.print(f"Generated the demo's passwords in {paths.credentials} (readable only by you).")
    stop_leftover_site(paths, console)
    sup = Supervisor(paths.logs)
    detach = False
    site = Site()
    try:
        # Every precondition before anything starts; a missing piece stops here.
        names = [e.name for e in EXAMPLES if not opts.only or e.name in opts.only]
        pre = check(opts.runtime, os.environ.get("HIVEMIND_TASK_IMAGE", "hivemind-task-python:bookworm"), names, opts.flower)
        start_dockerd(pre, paths, site, sup, console)
        ensure_image(pre, paths.logs, say=console.print)
        show_banner(console, pre)
        console.print(f"[dim]• redis-server: {services.redis_server_binary()}[/dim]")
        for line in ensure_accounts(paths, creds):
            console.print(f"[green]•[/green] {line}")
        start_site(opts, paths, creds, pre, sup, site, console)
        write_env_file(paths, site, creds)
        client = PoolClient(site.nodepool, creds.user, creds.password)
        try:
            client.login()
            stop_stale_tasks(client, console)
            rows = submit_examples(client, pre, opts.only)
            follow(client, rows, sup, paths, console, opts.max_wait)
        finally:
            client.close()
        console.print(outcome_table(rows))
        for line in notes(rows):
            console.print(f"  {line}", markup=False, highlight=False)
        console.print(f"Result zips: {shown(paths.results)}/<task>.zip   Logs: {shown(paths.logs)}/")
        write_private(
            paths.summary,
            json.dumps(
                {
                    "runtime": pre.runtime,
                    "gpus": pre.gpus,
                    "examples": [row.as_dict() for row in rows],
                    "docker_host": pre.docker.host.url if pre.docker else None,
                    "started_dockerd": bool(pre.docker and pre.docker.action == "start"),
                },
                indent=2,
            )
            + "\n",
        )
        all_good = all(row.as_expected for row in rows)
        console.print(
            "[bold green]All examples ended as expected.[/bold green]"
            if all_good
            else "[bold red]Some examples did not end as expected (see above and the logs).[/bold red]"
        )
        code = 0 if all_good else 1
        if opts.exit_when_done:
            return code
        use = f"Use it: set -a; . {shown(paths.env_file)}; set +a; hivemind submit {shown(examples_dir() / 'cpu_task')} --wait"
        if opts.keep_running:
            detach = True
            save_site(paths, site, sup)
            console.print(f"The site stays up. {use}\nStop it with: hivemind demo --stop")
            return code
        console.print(f"The site is up until you press Ctrl-C. {use}")
        while True:
            sup.check()
            time.sleep(1.0)
    except (KeyboardInterrupt, Interrupted) as exc:
        console.print(f"\n[yellow]{type(exc).__name__} {exc}: stopping the demo site…[/yellow]")
        return 130
    except ChildFailed as exc:
        console.print(Panel(escape(str(exc)), title="a part of the site failed", border_style="bold red"))
        return 1
    except (services.MissingTool, RuntimeError, FileNotFoundError, PoolError) as exc:
        console.print(Panel(escape(str(exc)), title="cannot run the demo", border_style="bold red"))
        return 1
    except Exception as exc:  # noqa: BLE001 - a stranger gets words and the logs, not just a traceback
        console.print_exception()
        console.print(
            Panel(
                escape(f"{type(exc).__name__}: {exc}\nLogs of every part: {paths.logs}"),
                title="the demo failed unexpectedly",
                border_style="bold red",
            )
        )
        return 1
    finally:
        if not detach:
            stop_site(sup, paths, site, console)


def stop_site(sup: Supervisor, paths: DemoPaths, site: Site, console: Console) -> None:
    # A second Ctrl-C while stopping must not leave half the site behind.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if sup.children:
            with console.status("stopping the site…"):
                sup.stop_all(
                    on_stop=lambda name: console.print(
                        "[dim]stopping dockerd (the demo started it)[/dim]"
                        if name == "dockerd"
                        else f"[dim]stopping {name}[/dim]"
                    )
                )
            console.print("Site stopped.")
        if site.dockerd_bridge:
            dockerd.remove_bridge(site.dockerd_bridge)
        paths.site.unlink(missing_ok=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def stop_kept_site(base: Path, console: Console) -> int:
    """`hivemind demo --stop`: stop a site left up by --keep-running."""
    paths = DemoPaths.under(base)
    if not paths.site.exists():
        console.print(f"No demo site is recorded in {paths.site}; nothing to stop.")
        return 0
    stop_leftover_site(paths, console)
    console.print("Site stopped.")
    return 0
