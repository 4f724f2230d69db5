"""The console watching real tasks, in a real browser: a real `celery worker`
subprocess runs them in Docker, the console (`hivemind console`, a subprocess)
reads the same Redis, chromium (Playwright) looks at the pages.

- a running task's charts gain points while the page sits open (the live
  refresh, no reload), and its output tail shows;
- History shows outcome, reason and CPT once it ended, filters by outcome and
  hands out the result zip;
- the Stop button cancels a running task;
- Pause on the Preferences page freezes the task's container (`docker
  inspect` State.Paused, which is the cgroup freezer) and Resume thaws it; the
  task then finishes inside its timeout although it was frozen past it;
- the Preferences form saves through the site's PrefsStore;
- Machine shows the worker host's series and Problems the worker's warnings;
- a checkpointing task shows its progress and last checkpoint's age; released
  by a long pause and resumed, its attempts show in History.
Each page is screenshotted (tests/console/console_kit.py says where).
"""

from __future__ import annotations

import io
import re
import time
import uuid
import zipfile

import pytest

from hivemind_celery.core import keys
from hivemind_celery.core.model import TASK_NAME, TaskOutcome, TaskSpec, TaskStatus
from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads.store import PayloadStore
from hivemind_celery.site.prefs import PrefsStore
from tests.console.console_kit import log_in, screenshot
from tests.services_kit import make_zip

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]


def ticking(seconds: int) -> str:
    """A task that half-burns a core and prints a line a second for `seconds` of its own time."""
    return (
        "import time\n"
        f"for i in range({seconds}):\n"
        "    end = time.monotonic() + 0.5\n"
        "    while time.monotonic() < end:\n"
        "        pass\n"
        "    time.sleep(0.5)\n"
        "    print('tick', i, flush=True)\n"
        "print('all done', flush=True)\n"
    )


@pytest.fixture(scope="module")
def worker(start_worker, redis_client):
    redis_client.delete(keys.site_prefs())
    return start_worker(
        "cpu", concurrency=2, HIVEMIND_SAMPLE_INTERVAL="1", HIVEMIND_PREFS_CHECK_INTERVAL="0.5", HIVEMIND_CHECKPOINT_INTERVAL="1"
    )


@pytest.fixture(scope="module")
def submit(celery_app, redis_client, redis_url, worker):
    store = PayloadStore(redis_client, Settings(redis_url=redis_url))

    def send(files: dict[str, str], name: str, timeout: float = 120, **spec: object):
        task = TaskSpec(
            task_id=f"{name}-{uuid.uuid4().hex[:8]}",
            payload=store.put(make_zip(files)),
            cpus=1.0,
            memory_mb=256,
            timeout=timeout,
            **spec,
        )
        return celery_app.send_task(TASK_NAME, args=[task.model_dump(mode="json")], task_id=task.task_id, queue="cpu")

    return send


def outcome_of(result) -> TaskOutcome:
    try:
        raw = result.get(timeout=240, propagate=False)
    except Exception as exc:  # noqa: BLE001 - the stored outcome says more
        raise AssertionError(f"no result: {exc}") from exc
    if isinstance(raw, dict) and "status" in raw:
        return TaskOutcome.model_validate(raw)
    # A non-succeeded outcome comes back as the exception that carries it (Flower shows FAILURE).
    stored = result.backend.client if False else None  # noqa: F841 - read from the task guard instead
    from hivemind_celery.task.idempotency import TaskGuard

    found = TaskGuard(result.app.backend.client, result.id).stored_outcome()
    assert found is not None, f"no outcome stored for {result.id}: {raw!r}"
    return found


def wait_for(check, timeout: float, what: str, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def points(page, chart: str) -> int:
    line = page.locator(f'svg[data-chart="{chart}"] polyline').first
    return int(line.get_attribute("data-points") or 0) if line.count() else 0


def test_a_running_task_charts_gain_points_and_history_shows_its_outcome(page, submit, worker) -> None:
    result = submit({"main.py": ticking(15)}, "chart")
    task_id = result.id
    log_in(page)
    page.goto("/running")
    page.wait_for_selector(f'[data-task="{task_id}"]', timeout=90_000)
    first = wait_for(lambda: points(page, f"{task_id}:cpu"), 30, "the CPU chart's first point")
    # No reload: the page's own refresh brings the new samples.
    later = wait_for(lambda: (n := points(page, f"{task_id}:cpu")) > first and n, 30, "more CPU points")
    assert later > first
    assert points(page, f"{task_id}:memory") >= later - 1
    api = page.context.request.get(f"/api/tasks/{task_id}/series").json()
    assert api["count"] >= later and api["points"][-1]["memory_bytes"] > 0
    wait_for(lambda: "tick" in page.locator(f"#task-{task_id} pre.output").inner_text(), 30, "output tail")
    screenshot(page, "running")
    page.goto("/")
    assert page.locator("#site-state .value").inner_text() in {"Busy", "Idle"}  # Busy unless it just ended
    screenshot(page, "overview")

    outcome = outcome_of(result)
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.reason
    assert outcome.reward and outcome.reward > 0
    page.goto("/history")
    row = page.locator(f'#history tr[data-task="{task_id}"]')
    wait_for(lambda: (page.reload() or True) and row.count() == 1, 20, "the task in the history")
    assert row.locator(".badge").inner_text() == "succeeded"
    assert row.locator(".cpt").inner_text() == str(outcome.reward)
    screenshot(page, "history")
    with page.expect_download() as download:
        row.locator("a", has_text="Result zip").click()
    data = open(download.value.path(), "rb").read()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert any(name.endswith("execution_report.json") for name in archive.namelist())
    page.goto("/")
    today = int(re.match(r"\d+", page.locator("#cpt-today").inner_text()).group())
    assert today >= outcome.reward


def test_history_filters_by_outcome_with_the_reason(page, submit) -> None:
    failing = submit({"main.py": "import sys\nprint('bad input')\nsys.exit(3)\n"}, "fails")
    outcome = outcome_of(failing)
    assert outcome.status is TaskStatus.FAILED
    log_in(page)
    page.goto("/history?outcome=failed")
    row = page.locator(f'#history tr[data-task="{failing.id}"]')
    wait_for(lambda: (page.reload() or True) and row.count() == 1, 20, "the failed task in the history")
    assert row.locator(".badge").inner_text() == "failed"
    assert {b.inner_text() for b in page.locator("#history .badge").all()} == {"failed"}
    screenshot(page, "history-failed")


def test_the_stop_button_cancels_a_running_task(page, submit) -> None:
    result = submit({"main.py": ticking(120)}, "stopme")
    log_in(page)
    page.goto("/running")
    card = page.locator(f'[data-task="{result.id}"]')
    page.wait_for_selector(f'[data-task="{result.id}"]', timeout=90_000)
    page.on("dialog", lambda dialog: dialog.accept())
    card.locator("button", has_text="Stop").click()
    page.wait_for_url("**/running?notice=*")
    outcome = outcome_of(result)
    assert outcome.status is TaskStatus.CANCELLED, outcome.reason


def paused_state(docker_client, task_id: str) -> bool | None:
    found = docker_client.containers.list(all=True, filters={"label": f"hivemind.task_id={task_id}"})
    if not found:
        return None
    found[0].reload()
    return bool(found[0].attrs["State"]["Paused"])


def test_pause_freezes_the_task_and_resume_lets_it_finish(page, submit, docker_client, redis_client) -> None:
    # 10 s of its own work under a 25 s timeout, frozen for 20 s of it: it only
    # finishes if frozen time does not count against the timeout.
    result = submit({"main.py": ticking(10)}, "paused", timeout=25)
    log_in(page)
    page.goto("/running")
    page.wait_for_selector(f'[data-task="{result.id}"]', timeout=90_000)
    wait_for(lambda: paused_state(docker_client, result.id) is False, 30, "the task's container running")
    page.goto("/preferences")
    page.click("#pause")
    page.wait_for_url("**/preferences?notice=Paused")
    wait_for(lambda: paused_state(docker_client, result.id), 10, "the container frozen after Pause")
    frozen_at = time.monotonic()
    wait_for(lambda: (page.reload() or True) and page.locator("#mode-state").inner_text() == "Paused", 10, "the page says Paused")
    screenshot(page, "preferences-paused")
    page.goto("/running")
    assert "Paused" in page.locator(".notice.warn").inner_text()
    while time.monotonic() - frozen_at < 20:
        assert paused_state(docker_client, result.id), "thawed while the site was paused"
        time.sleep(1)
    page.goto("/preferences")
    page.click("#resume")
    page.wait_for_url("**/preferences?notice=Resumed")
    wait_for(lambda: paused_state(docker_client, result.id) in (False, None), 10, "the container thawed after Resume")
    outcome = outcome_of(result)
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.reason
    redis_client.delete(keys.site_prefs())


def test_the_preferences_form_saves(page, redis_client, redis_url) -> None:
    redis_client.delete(keys.site_prefs())
    log_in(page)
    page.goto("/preferences")
    page.check("input[name=run_mode][value=when_idle]")
    page.fill("input[name=cpu_share_percent]", "50")
    page.fill("input[name=memory_share_percent]", "75")
    page.fill("input[name=suspend_above_cpu_percent]", "40")
    page.fill("input[name=hours_start]", "22:00")
    page.fill("input[name=hours_end]", "07:00")
    page.fill("input[name=keep_free_disk_gb]", "5")
    page.fill("input[name=release_memory_after_minutes]", "30")
    page.click("#save")
    page.wait_for_url("**/preferences?notice=Preferences+saved")
    screenshot(page, "preferences")
    saved = PrefsStore(redis_client, Settings(redis_url=redis_url)).load()
    assert (saved.run_mode, saved.cpu_share_percent, saved.memory_share_percent) == ("when_idle", 50, 75)
    assert saved.suspend_above_cpu_percent == 40 and str(saved.hours) == "22:00-07:00"
    assert saved.keep_free_disk_gb == 5 and saved.release_memory_after_minutes == 30
    assert page.locator("input[name=cpu_share_percent]").input_value() == "50"
    # A bad value is refused with its reason and changes nothing.
    page.fill("input[name=cpu_share_percent]", "250")
    page.evaluate("document.querySelector('input[name=cpu_share_percent]').removeAttribute('max')")
    page.click("#save")
    assert "cpu_share_percent" in page.locator("#prefs-error").inner_text()
    assert PrefsStore(redis_client, Settings(redis_url=redis_url)).load().cpu_share_percent == 50
    redis_client.delete(keys.site_prefs())


def test_the_preferences_form_steps_aside_for_battery_and_heat(page, redis_client, redis_url) -> None:
    redis_client.delete(keys.site_prefs())
    log_in(page)
    page.goto("/preferences")
    assert page.locator("input[name=pause_on_battery]").is_checked()  # the default, as BOINC's
    page.uncheck("input[name=pause_on_battery]")
    page.fill("input[name=max_cpu_temperature_c]", "85")
    page.fill("input[name=max_gpu_temperature_c]", "80")
    page.fill("input[name=temperature_margin_c]", "8")
    page.fill("input[name=resume_after_seconds]", "90")
    page.click("#save")
    page.wait_for_url("**/preferences?notice=Preferences+saved")
    saved = PrefsStore(redis_client, Settings(redis_url=redis_url)).load()
    assert (saved.pause_on_battery, saved.max_cpu_temperature_c, saved.max_gpu_temperature_c) == (False, 85, 80)
    assert (saved.temperature_margin_c, saved.resume_after_seconds) == (8, 90)
    assert not page.locator("input[name=pause_on_battery]").is_checked()
    # A limit past what any sensor reads is refused by name and changes nothing.
    page.fill("input[name=max_gpu_temperature_c]", "400")
    page.evaluate("document.querySelector('input[name=max_gpu_temperature_c]').removeAttribute('max')")
    page.click("#save")
    assert "max_gpu_temperature_c" in page.locator("#prefs-error").inner_text()
    assert PrefsStore(redis_client, Settings(redis_url=redis_url)).load().max_gpu_temperature_c == 80
    redis_client.delete(keys.site_prefs())


def test_machine_and_problems_pages(page, submit, worker) -> None:
    rejected = submit({"main.py": "print(1)\n"}, "rejected", image="not-allowed:latest")
    outcome = outcome_of(rejected)
    assert outcome.status is TaskStatus.REJECTED
    log_in(page)
    page.goto("/machine")
    host = page.locator(f'[data-host="{worker.hostname}"]')
    wait_for(lambda: host.count() == 1 and points(page, "host:cpu") >= 2, 30, "two host samples on the page")
    assert points(page, "host:memory") >= 2 and points(page, "host:network") >= 1
    screenshot(page, "machine")
    page.goto("/problems")
    row = page.locator("#problems tr", has_text=rejected.id)
    wait_for(lambda: row.count() >= 1, 15, "the worker's warning about the rejected task")
    assert "worker@" in row.first.inner_text()
    screenshot(page, "problems")
    page.goto("/history?outcome=rejected")
    assert page.locator(f'#history tr[data-task="{rejected.id}"] .reason').inner_text()


COUNTING = (
    "import os, time\n"
    "d = os.environ['HIVEMIND_CHECKPOINT_DIR']\n"
    "p = os.path.join(d, 'step')\n"
    "step = int(open(p).read()) if os.path.exists(p) else 0\n"
    "while step < 16:\n"
    "    time.sleep(0.5)\n"
    "    step += 1\n"
    "    open(p + '.tmp', 'w').write(str(step)); os.replace(p + '.tmp', p)\n"
    "    open(d + '/progress.tmp', 'w').write(str(step / 16)); os.replace(d + '/progress.tmp', d + '/progress')\n"
    "    print('step', step, flush=True)\n"
)


def test_progress_and_checkpoint_age_while_running_and_attempts_in_history(page, submit, redis_client, redis_url) -> None:
    prefs = PrefsStore(redis_client, Settings(redis_url=redis_url))
    redis_client.delete(keys.site_prefs())
    prefs.update(release_memory_after_minutes=0.02)  # a pause over 1.2 s releases the task
    try:
        result = submit({"main.py": COUNTING}, "ckpt")
        task_id = result.id
        log_in(page)
        page.goto("/running")
        card = page.locator(f"#task-{task_id}")
        wait_for(
            lambda: (page.reload() or True) and card.locator(".progress").count() == 1, 60, "the task's progress on the page"
        )
        assert re.fullmatch(r"\d+ %", card.locator(".progress").inner_text())
        assert card.locator(".checkpoint-age").inner_text()
        screenshot(page, "running-checkpoint")
        prefs.pause()
        wait_for(
            lambda: b"its memory is released" in b"".join(f[b"data"] for _, f in redis_client.xrange(keys.task_output(task_id))),
            60,
            "the task released",
        )
        prefs.resume()
        outcome = outcome_of(result)
    finally:
        redis_client.delete(keys.site_prefs())
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.reason
    assert [a.ended for a in outcome.attempts] == ["released", "finished"]
    page.goto("/history")
    row = page.locator(f'#history tr[data-task="{task_id}"]')
    wait_for(lambda: (page.reload() or True) and row.count() == 1, 20, "the task in the history")
    assert row.locator(".attempts").inner_text().startswith("2 attempts: released on ")
