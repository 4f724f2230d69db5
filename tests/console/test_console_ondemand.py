"""The console on demand: `hivemind console` binds the port, then a small
activator (standard library only) holds it and runs the real console only from
a connection until an idle spell. Real processes, real HTTP on loopback, real
Redis; the processes are watched with psutil."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

from hivemind.console.activator import FIRST_RETRY_S, MAX_RETRY_S, Backoff
from hivemind.console.listener import bind_listener, child_command
from hivemind.console.serve import IdleWatch
from tests.console.console_kit import (
    PASSWORD,
    Console,
    CookieClient,
    console_children,
    console_env,
    free_port,
    log_in,
    start_console,
    start_held,
    stop_console,
    wait_for,
)
from tests.services_kit import ROOT

IDLE_EXIT = "2"  # seconds: short, so a console's idle exit comes within the test
HEAVY = ("fastapi", "starlette", "uvicorn", "jinja2", "redis", "grpc", "pydantic", "typer", "rich", "hivemind_celery")


def modules_after(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return set(json.loads(run.stdout.strip().splitlines()[-1]))


def holds_port(pid: int, port: int) -> bool:
    """Whether `pid` has a TCP socket listening on `port` (read from the kernel, not by connecting)."""
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in psutil.Process(pid).net_connections(kind="tcp"))


def port_of(console: Console) -> int:
    return int(console.url.rsplit(":", 1)[1])


def test_importing_the_activator_loads_only_the_standard_library() -> None:
    before = modules_after("pass")  # what the interpreter and the venv's .pth files load anyway
    added = modules_after("import hivemind.console.activator") - before
    ours = {m for m in added if m.split(".")[0] == "hivemind"}
    assert ours == {"hivemind", "hivemind.console", "hivemind.console.activator"}
    foreign = sorted(m for m in added - ours if m.split(".")[0] not in sys.stdlib_module_names)
    assert foreign == [], f"the activator loads more than the standard library: {foreign}"
    assert not [m for m in added if m.split(".")[0] in HEAVY]


@pytest.mark.redis
def test_the_port_is_held_with_no_console_until_someone_connects(redis_url, tmp_path) -> None:
    console = start_held(redis_url, tmp_path, HIVEMIND_CONSOLE_PASSWORD=PASSWORD)
    try:
        activator = psutil.Process(console.proc.pid)
        assert "hivemind.console.activator" in activator.cmdline(), "the CLI execs into the activator (same pid)"
        assert holds_port(console.proc.pid, port_of(console))
        time.sleep(1.0)  # a console started without a connection would show by now
        assert console_children(console) == []
        activator_pss = activator.memory_full_info().pss

        visitor = CookieClient(console.url)
        status, page = visitor.get("/login")
        assert status == 200 and "HiveMind console" in page
        [child] = console_children(console)
        assert child.cmdline()[1:3] == ["-m", "hivemind.console"], child.cmdline()
        assert visitor.log_in() == 200
        assert visitor.get("/api/overview")[0] == 200
        child_pss = child.memory_full_info().pss
        print(f"PSS: activator {activator_pss / 2**20:.1f} MiB, console {child_pss / 2**20:.1f} MiB")
        assert activator_pss * 3 < child_pss, (activator_pss, child_pss)
    finally:
        stop_console(console)


@pytest.mark.redis
def test_an_idle_console_exits_and_the_next_visit_starts_one_with_the_same_session(redis_url, tmp_path) -> None:
    console = start_held(redis_url, tmp_path, HIVEMIND_CONSOLE_PASSWORD=PASSWORD, HIVEMIND_CONSOLE_IDLE_EXIT=IDLE_EXIT)
    try:
        visitor = CookieClient(console.url)
        assert visitor.log_in() == 200
        [first] = console_children(console)
        wait_for(lambda: not console_children(console), "the idle console exiting", console)
        assert "exiting until the next connection" in console.log()
        assert "the console exited (idle)" in console.log()
        assert holds_port(console.proc.pid, port_of(console)), "the activator keeps the port between consoles"

        # The session cookie from the first console is good for the next one (the
        # signing key is a file); the API answers 401 to anyone without one.
        status, body = visitor.get("/api/overview")
        assert status == 200, body[:300]
        [second] = console_children(console)
        assert second.pid != first.pid
        assert CookieClient(console.url).get("/api/overview")[0] == 401
    finally:
        stop_console(console)


@pytest.mark.redis
def test_visits_that_come_while_the_console_starts_wait_and_are_all_served(redis_url, tmp_path) -> None:
    console = start_held(redis_url, tmp_path, HIVEMIND_CONSOLE_PASSWORD=PASSWORD)
    try:
        statuses: list[int] = []

        def visit() -> None:
            statuses.append(CookieClient(console.url).get("/login")[0])

        visits = [threading.Thread(target=visit) for _ in range(8)]
        for thread in visits:
            thread.start()
        for thread in visits:
            thread.join(90)
        assert statuses == [200] * 8
        assert console.log().count("a connection: starting the console") == 1
        assert len(console_children(console)) == 1
    finally:
        stop_console(console)


@pytest.mark.redis
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_activator_stops_the_console_too(redis_url, tmp_path, sig) -> None:
    console = start_held(redis_url, tmp_path, HIVEMIND_CONSOLE_PASSWORD=PASSWORD)
    try:
        assert CookieClient(console.url).get("/login")[0] == 200
        [child] = console_children(console)
        console.proc.send_signal(sig)
        assert console.proc.wait(60) == 0, console.log()
        assert not child.is_running(), "the console outlived its activator"
        assert "stopped" in console.log()
    finally:
        stop_console(console)


@pytest.mark.redis
def test_a_console_that_cannot_start_is_reported_and_not_restarted_in_a_loop(redis_url, tmp_path) -> None:
    """The activator is started directly, its console's settings broken (the CLI would
    have refused them before the exec; here they stand for what can break only in
    the console: a missing package, a state file gone)."""
    listener = bind_listener("127.0.0.1", free_port())
    fd = listener.fileno()
    port = listener.getsockname()[1]
    log_path = tmp_path / "activator.log"
    env = console_env(redis_url, tmp_path / "state", HIVEMIND_CONSOLE_PASSWORD=PASSWORD, HIVEMIND_CONSOLE_PORT="not-a-port")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hivemind.console.activator", "--fd", str(fd), "--", *child_command(fd, "127.0.0.1", 60)],
        cwd=ROOT,
        env=env,
        pass_fds=(fd,),
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
    )
    listener.close()  # the activator holds it now
    console = Console(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        status, body = CookieClient(console.url).get("/login")
        assert status == 503, body
        assert "failed to start" in body
        log = console.log()
        assert "the console's settings are not valid" in log and "console_port" in log, log
        assert "the console exited with status 2" in log, log
        starts = log.count("a connection: starting the console")
        assert starts >= 1

        time.sleep(3 * FIRST_RETRY_S)  # no connection meanwhile: a hot loop would start consoles now
        assert console.log().count("a connection: starting the console") == starts
        assert console_children(console) == []
        status, body = CookieClient(console.url).get("/login")
        assert status == 503 and "failed to start" in body
        assert proc.poll() is None, "the activator keeps serving the port"
        assert holds_port(proc.pid, port)
    finally:
        stop_console(console)
    assert proc.returncode == 0


@pytest.mark.redis
@pytest.mark.parametrize("args", [[], ["--always-on"]])
def test_a_taken_port_is_a_clear_error(redis_url, tmp_path, args) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "hivemind.cli", "console", "--port", str(port), *args],
            cwd=ROOT,
            env=console_env(redis_url, tmp_path / "state", HIVEMIND_CONSOLE_PASSWORD=PASSWORD),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done
    assert f"port {port} on 127.0.0.1 is taken" in done.stderr


@pytest.mark.redis
@pytest.mark.parametrize(
    ("args", "env"), [(["--always-on"], {}), ([], {"HIVEMIND_CONSOLE_IDLE_EXIT": "0"})], ids=["--always-on", "idle-exit-0"]
)
def test_always_on_serves_from_the_command_itself(redis_url, tmp_path, args, env) -> None:
    console = start_console(redis_url, tmp_path, *args, HIVEMIND_CONSOLE_PASSWORD=PASSWORD, **env)
    try:
        cmdline = psutil.Process(console.proc.pid).cmdline()
        assert cmdline[1:3] == ["-m", "hivemind.cli"], cmdline
        assert console_children(console) == []
        assert CookieClient(console.url).log_in() == 200
    finally:
        stop_console(console)


def test_the_backoff_doubles_after_each_failure_and_resets_after_a_good_run() -> None:
    backoff = Backoff()
    assert backoff.waiting(100.0) == 0.0
    delays = [backoff.ended(True, 100.0) for _ in range(8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, MAX_RETRY_S, MAX_RETRY_S]
    assert backoff.waiting(100.0) == MAX_RETRY_S
    assert backoff.waiting(100.0 + MAX_RETRY_S) == 0.0
    assert backoff.ended(False, 200.0) == 0.0 and backoff.waiting(200.0) == 0.0
    assert backoff.ended(True, 300.0) == FIRST_RETRY_S


def test_idle_time_counts_from_the_last_request_or_open_connection() -> None:
    watch = IdleWatch(now=0.0)
    assert watch.idle_for(requests=0, busy=False, now=5.0) == 5.0
    assert watch.idle_for(requests=1, busy=False, now=6.0) == 0.0  # a request came
    assert watch.idle_for(requests=1, busy=True, now=50.0) == 0.0  # a connection is open
    assert watch.idle_for(requests=1, busy=False, now=53.0) == 3.0


# A headless browser's tabs are always visible, so the page's visibility is a
# stand-in here: document.hidden is overridden and visibilitychange fired by hand,
# as a browser does when the tab goes to the background and comes back.
HIDE_SWITCH = """
let hidden = false;
Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
window.__setHidden = (value) => { hidden = value; document.dispatchEvent(new Event("visibilitychange")); };
"""


@pytest.mark.redis
def test_a_tab_out_of_sight_stops_asking_so_the_console_can_go_idle(page, console) -> None:
    page.add_init_script(HIDE_SWITCH)
    log_in(page)
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if "/fragment/" in request.url else None)
    with page.expect_request(lambda request: "/fragment/overview" in request.url, timeout=30_000):
        pass  # a visible page re-fetches its live part
    page.evaluate("window.__setHidden(true)")
    page.wait_for_timeout(500)  # a fetch already on its way when the tab went away
    seen = len(asked)
    page.wait_for_timeout(5_000)  # two and a half refresh periods
    assert len(asked) == seen, asked[seen:]
    with page.expect_request(lambda request: "/fragment/overview" in request.url, timeout=30_000):
        page.evaluate("window.__setHidden(false)")  # back in sight: it asks again
