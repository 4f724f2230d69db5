"""The console's HTTP contract, route by route, over a real socket: the console
served by `hivemind console` in a subprocess (real Redis), spoken to with the
standard library (no redirect followed, so each status and Location shows).

What a visitor without a session gets (pages: 303 to /login; the JSON API,
live fragments and stop: 401), what a POST without the session's CSRF token
gets (403, before anything changes), and the login and logout round trip with
its cookie; and what the pages say from what the site's packages hold (the
live workers by the registry's rule, the bridge's standing, a running task's
usage and output, the problems). The browser tests (test_console_login.py, test_console_tasks.py)
drive the same pages through chromium."""

from __future__ import annotations

import http.client
import json
import logging
import re
import time
import urllib.parse
from dataclasses import dataclass, field

import pytest

from hivemind_celery.core import keys
from hivemind_celery.core.model import TaskSpec
from hivemind_celery.core.settings import Settings
from hivemind_celery.observability.logs import ProblemLogHandler
from hivemind_celery.site.activity import Activity
from hivemind_celery.site.registry import Registry, WorkerCapacity
from hivemind_celery.site.standing import publish_standing
from hivemind_celery.task.observers import TaskRun, UsageKeyObserver
from hivemind_celery.task.streams import OutputStream
from hivemind_celery.usage.sampler import UsageSample
from tests.console.console_kit import PASSWORD, Console

pytestmark = [pytest.mark.redis]

PAGES = ("overview", "running", "history", "machine", "problems", "preferences")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def location(self) -> str:
        return self.headers.get("location", "")


@dataclass
class Visitor:
    """One browser's worth of state: the session cookie, nothing else."""

    url: str
    cookie: str = ""
    set_cookies: list[str] = field(default_factory=list)

    def request(self, method: str, path: str, form: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> Reply:
        parts = urllib.parse.urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        sent = dict(headers or {})
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookie:
            sent["Cookie"] = self.cookie
        try:
            conn.request(method, path, body=body, headers=sent)
            raw = conn.getresponse()
            reply = Reply(raw.status, {k.lower(): v for k, v in raw.getheaders()}, raw.read())
            self.set_cookies = raw.headers.get_all("set-cookie") or []
        finally:
            conn.close()
        for line in self.set_cookies:
            name_value = line.split(";", 1)[0]
            if name_value.startswith("hivemind_console="):
                self.cookie = "" if "1970" in line else name_value  # a cleared session expires the cookie
        return reply

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, form: dict[str, str] | None = None, **headers: str) -> Reply:
        return self.request("POST", path, form=form if form is not None else {}, headers=headers)

    def csrf_token(self) -> str:
        page = self.get("/login" if not self.cookie else "/preferences")
        found = re.search(rb'name="csrf_token" value="([^"]+)"', page.body)
        assert found, f"no CSRF token on the page ({page.status})"
        return found.group(1).decode()

    def log_in(self, password: str = PASSWORD) -> Reply:
        return self.post("/login", {"password": password, "csrf_token": self.csrf_token()})


@pytest.fixture
def anonymous(console: Console) -> Visitor:  # noqa: F811 - console is a fixture
    return Visitor(console.url)


@pytest.fixture
def owner(console: Console) -> Visitor:  # noqa: F811 - console is a fixture
    visitor = Visitor(console.url)
    reply = visitor.log_in()
    assert reply.status == 303 and reply.location == "/", (reply.status, reply.body[:200])
    return visitor


@pytest.mark.parametrize("path", ["/", *(f"/{name}" for name in PAGES), "/history/t-1/result.zip"])
def test_a_page_without_a_session_goes_to_the_login(anonymous: Visitor, path: str) -> None:
    reply = anonymous.get(path)
    assert (reply.status, reply.location) == (303, "/login")


@pytest.mark.parametrize("path", ["/api/overview", "/api/tasks/t-1/series", "/fragment/overview", "/fragment/nope"])
def test_the_api_and_fragments_without_a_session_answer_401(anonymous: Visitor, path: str) -> None:
    reply = anonymous.get(path)
    assert reply.status == 401
    assert json.loads(reply.body) == {"error": "log in first"}


def test_stop_without_a_session_answers_401_before_the_token_is_read(anonymous: Visitor) -> None:
    reply = anonymous.post("/tasks/t-1/stop", {})
    assert reply.status == 401
    assert json.loads(reply.body) == {"error": "log in first"}


@pytest.mark.parametrize("path", ["/preferences", "/pause", "/resume"])
def test_a_change_without_a_session_goes_to_the_login(anonymous: Visitor, path: str) -> None:
    reply = anonymous.post(path, {})
    assert (reply.status, reply.location) == (303, "/login")


def test_an_unknown_page_is_404_even_without_a_session(anonymous: Visitor) -> None:
    assert anonymous.get("/nope").status == 404


def test_login_without_the_token_is_403(anonymous: Visitor) -> None:
    anonymous.get("/login")  # a session exists, with its token; this POST does not carry it
    reply = anonymous.post("/login", {"password": PASSWORD})
    assert reply.status == 403
    assert b"CSRF" in reply.body
    assert anonymous.get("/").location == "/login", "not logged in"


def test_a_wrong_password_is_401_after_a_delay(anonymous: Visitor) -> None:
    token = anonymous.csrf_token()
    started = time.monotonic()
    reply = anonymous.post("/login", {"password": "not it", "csrf_token": token})
    elapsed = time.monotonic() - started
    assert reply.status == 401
    assert b"Wrong password." in reply.body
    # A lower bound only (the delay slows guessing): a slow machine cannot make it fail.
    assert elapsed >= 1.0, elapsed
    assert anonymous.get("/").location == "/login"


def test_login_sets_a_strict_http_only_cookie_and_opens_every_page(owner: Visitor) -> None:
    assert owner.cookie
    assert owner.get("/login").location == "/", "a logged-in visit to /login goes home"
    for name in PAGES:
        reply = owner.get(f"/{name}")
        assert reply.status == 200, name
        assert b'<meta name="csrf-token"' in reply.body
    for name in ("overview", "running", "machine", "problems"):
        assert owner.get(f"/fragment/{name}").status == 200, name
    assert owner.get("/fragment/history").status == 404, "history has no live part"
    assert owner.get("/nope").status == 404
    overview = json.loads(owner.get("/api/overview").body)
    assert overview["state"] in {"Idle", "Busy", "Paused", "Offline"}
    series = json.loads(owner.get("/api/tasks/t-none/series").body)
    assert series == {"task_id": "t-none", "points": [], "count": 0}
    assert owner.get("/history/t-none/result.zip").status == 404


def test_the_login_cookie_is_strict_and_http_only(console: Console) -> None:  # noqa: F811 - fixture
    visitor = Visitor(console.url)
    visitor.log_in()
    line = next(c for c in visitor.set_cookies if c.startswith("hivemind_console="))
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in line.split(";")[1:]}
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "samesite=strict"
    assert attributes["max-age"] == f"Max-Age={7 * 24 * 3600}"


@pytest.mark.parametrize("path", ["/logout", "/pause", "/resume", "/preferences", "/tasks/t-1/stop"])
def test_every_change_without_the_token_is_403(owner: Visitor, path: str) -> None:
    assert owner.post(path, {}).status == 403
    assert owner.post(path, {"csrf_token": "forged"}).status == 403
    assert owner.get("/").status == 200, "still logged in"


def test_the_token_may_come_as_a_header(owner: Visitor) -> None:
    token = owner.csrf_token()
    reply = owner.post("/resume", {}, **{"X-CSRF-Token": token})
    assert (reply.status, reply.location) == (303, "/preferences?notice=Resumed")


def test_changes_with_the_token_redirect_with_their_notice(owner: Visitor) -> None:
    token = owner.csrf_token()
    reply = owner.post("/tasks/t-1/stop", {"csrf_token": token})
    assert (reply.status, reply.location) == (303, "/running?notice=asked+t-1+to+stop")
    reply = owner.post("/pause", {"csrf_token": token, "hours": "not a number"})
    assert reply.status == 303 and reply.location.startswith("/preferences?notice=Not+paused:+")
    reply = owner.post("/pause", {"csrf_token": token, "hours": "1"})
    assert (reply.status, reply.location) == (303, "/preferences?notice=Paused")
    reply = owner.post("/resume", {"csrf_token": token})
    assert (reply.status, reply.location) == (303, "/preferences?notice=Resumed")
    reply = owner.post("/preferences", {"csrf_token": token, "run_mode": "always", "cpu_share_percent": "lots"})
    assert reply.status == 400
    assert b"cpu share percent" in reply.body


def test_logout_ends_the_session(owner: Visitor) -> None:
    reply = owner.post("/logout", {"csrf_token": owner.csrf_token()})
    assert (reply.status, reply.location) == (303, "/login")
    assert owner.get("/").location == "/login"
    assert owner.get("/api/overview").status == 401


# --- what the pages say, from what the site's packages hold (the console reads no key itself)
def overview(visitor: Visitor) -> dict:
    reply = visitor.get("/api/overview")
    assert reply.status == 200
    return json.loads(reply.body)


def test_the_overview_counts_live_workers_by_the_registrys_rule(owner: Visitor, redis_client) -> None:
    redis_client.flushdb()
    registry = Registry(redis_client)
    assert (overview(owner)["state"], overview(owner)["workers"], overview(owner)["worker_beat"]) == ("Offline", 0, None)
    registry.register(WorkerCapacity(worker_id="w-steady", hostname="h", cpus=2, memory_mb=512))
    registry.register(WorkerCapacity(worker_id="w-dying", hostname="h", cpus=2, memory_mb=512), ttl=0.3)
    seen = overview(owner)
    assert (seen["state"], seen["workers"]) == ("Idle", 2)
    time.sleep(0.5)  # w-dying misses its deadline; nobody unregisters it
    seen = overview(owner)
    assert (seen["state"], seen["workers"]) == ("Idle", 1)
    assert seen["worker_beat"] == pytest.approx(registry.workers()[0].last_heartbeat)
    registry.unregister("w-steady")
    assert overview(owner)["state"] == "Offline"


def test_the_overview_shows_the_bridges_standing(owner: Visitor, redis_client) -> None:
    redis_client.flushdb()
    assert overview(owner)["joined"] is False
    publish_standing(redis_client, "node-77", "pool.test:50051", status="Idle")
    seen = overview(owner)
    assert (seen["joined"], seen["node_id"], seen["pool"], seen["pool_status"], seen["pool_error"]) == (
        True,
        "node-77",
        "pool.test:50051",
        "Idle",
        "",
    )
    assert seen["last_beat"] == pytest.approx(time.time(), abs=30)
    publish_standing(redis_client, "node-77", "pool.test:50051", error="UNAVAILABLE: no route")
    seen = overview(owner)
    assert seen["joined"] is False and seen["pool_error"] == "UNAVAILABLE: no route"
    assert b"UNAVAILABLE: no route" in owner.get("/fragment/overview").body


def test_a_running_task_shows_its_usage_and_output_tail(owner: Visitor, redis_client, redis_url) -> None:
    redis_client.flushdb()
    task_id = "t-shown"
    Activity(redis_client).started(task_id, {"worker": "w-1", "cpus": 1.0, "memory_mb": 256})
    redis_client.set(keys.task_lock(task_id), b"holder", ex=60)  # as the running worker holds it
    run = TaskRun(
        spec=TaskSpec(task_id=task_id, payload="sha256:" + "0" * 64), client=redis_client, settings=Settings(redis_url=redis_url)
    )
    UsageKeyObserver().on_sample(
        run,
        UsageSample(
            task_id=task_id,
            timestamp=time.time(),
            elapsed_s=1.0,
            cpu_seconds=1.5,
            cpu_user_seconds=1.5,
            cpu_system_seconds=0.0,
            cpu_percent=42.0,
            memory_bytes=3 << 20,
            memory_peak_bytes=3 << 20,
            memory_percent=1.0,
            pids=1,
            oom_kills=0,
            gpu_percent=0.0,
            gpu_memory_bytes=0,
            source="cgroup",
        ),
    )
    stream = OutputStream(redis_client, task_id)
    stream.write(b"tick 7\n")
    stream.flush()
    body = owner.get("/fragment/running").body.decode()
    assert f'id="task-{task_id}"' in body
    assert "CPU <b>42 %</b>" in body and "Memory <b>3.0 MiB</b>" in body
    assert "tick 7" in body
    redis_client.delete(keys.task_lock(task_id))  # its run ended without a word: it drops out
    assert f'id="task-{task_id}"' not in owner.get("/fragment/running").body.decode()


def test_the_problems_page_lists_the_logged_problems(owner: Visitor, redis_client) -> None:
    redis_client.flushdb()
    assert b"All quiet." in owner.get("/fragment/problems").body
    logger = logging.getLogger("hivemind.test.console_problems")
    handler = ProblemLogHandler(redis_client, "worker", node_id="node-5")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("the disk is nearly full", extra={"task_id": "t-disk"})
    finally:
        logger.removeHandler(handler)
    body = owner.get("/fragment/problems").body.decode()
    assert "the disk is nearly full" in body and "t-disk" in body and "node-5" in body
