"""`hivemind demo` end to end, as a stranger runs it: from a copy of the checkout,
in a fresh working folder (so ./.hivemind is new), with real Redis (its own,
embedded), Node Pool, bridge, Celery worker and Docker.

Each test checks that nothing the demo started is left behind: no process
whose working folder is inside the test's folders, no container of its worker.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
import zipfile
from pathlib import Path

import psutil
import pytest

from tests.demo.demo_kit import demo, leftovers

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def demo_containers(docker_client, work: Path) -> list[str]:
    site = json.loads((work / ".hivemind" / "demo-site.json").read_text())
    names = []
    for worker_id in site["worker_ids"]:
        found = docker_client.containers.list(all=True, filters={"label": f"hivemind.worker={worker_id}"})
        names.extend(c.name for c in found)
    return names


@pytest.mark.timeout(600)
def test_demo_runs_the_examples_and_stops_cleanly(checkout, docker_client, tmp_path):
    repo, work, env = checkout
    done = subprocess.run(
        demo("--exit-when-done", "--max-wait", "400"), cwd=work, env=env, capture_output=True, text=True, timeout=560
    )
    out = done.stdout + done.stderr
    summary = json.loads((work / ".hivemind" / "demo-summary.json").read_text())
    outcomes = {row["example"]: row for row in summary["examples"]}
    assert summary["runtime"] == "docker", out
    assert outcomes["cpu_task"]["outcome"] == "succeeded", out
    assert outcomes["failing_task"]["outcome"] == "failed", out
    assert outcomes["failing_task"]["exit_code"] == 1, out
    assert outcomes["slow_task"]["outcome"] == "timed_out", out
    assert outcomes["gpu_task"]["outcome"] == ("succeeded" if summary["gpus"] else "skipped"), out
    # requirements_task needs PyPI from inside the set-up container: the demo's
    # exit status says whether everything, that one included, went as expected.
    everything_expected = all(row["as_expected"] for row in summary["examples"])
    assert done.returncode == (0 if everything_expected else 1), out
    with zipfile.ZipFile(outcomes["cpu_task"]["result_zip"]) as result:
        assert json.loads(result.read("results/summary.json"))["primes"] == 148933
        assert json.loads(result.read("execution_report.json"))["status"] == "succeeded"
    with zipfile.ZipFile(outcomes["slow_task"]["result_zip"]) as result:
        assert result.read("progress.log").startswith(b"0\n"), "the timed-out task's files came back"
    assert "Site stopped." in out
    assert not (work / ".hivemind" / "demo-site.json").exists()
    assert leftovers(tmp_path) == []
    for name in ("redis", "nodepool", "bridge", "worker-cpu"):
        assert (work / ".hivemind" / "logs" / f"{name}.log").stat().st_size > 0

    # A second run reuses the first one's database, accounts and Redis data.
    creds = (work / ".hivemind" / "demo-credentials.json").read_text()
    again = subprocess.run(
        demo("--exit-when-done", "--only", "failing_task", "--no-flower"),
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "created Node Pool user" not in again.stdout
    assert (work / ".hivemind" / "demo-credentials.json").read_text() == creds
    assert leftovers(tmp_path) == []


@pytest.mark.timeout(300)
def test_ctrl_c_stops_every_part(checkout, docker_client, tmp_path):
    repo, work, env = checkout
    proc = subprocess.Popen(
        demo("--only", "slow_task", "--task-timeout", "120", "--no-flower"),
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    site_file = work / ".hivemind" / "demo-site.json"
    deadline = time.monotonic() + 180
    containers: list[str] = []
    # Wait until the slow task's container runs, so stopping has real work to do.
    while time.monotonic() < deadline and proc.poll() is None and not containers:
        if site_file.exists() and json.loads(site_file.read_text()).get("worker_ids"):
            containers = demo_containers(docker_client, work)
        time.sleep(0.5)
    assert containers, f"the slow task never started:\n{proc.communicate(timeout=60)[0] if proc.poll() is not None else ''}"
    site = json.loads(site_file.read_text())
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "Site stopped." in out
    assert leftovers(tmp_path) == []
    for worker_id in site["worker_ids"]:
        left = docker_client.containers.list(all=True, filters={"label": f"hivemind.worker={worker_id}"})
        assert left == [], f"containers left: {[c.name for c in left]}\n{out}"


@pytest.mark.timeout(300)
def test_keep_running_then_stop(checkout, docker_client, tmp_path):
    repo, work, env = checkout
    kept = subprocess.run(
        demo("--keep-running", "--only", "failing_task", "--no-flower"),
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = kept.stdout + kept.stderr
    assert kept.returncode == 0, out
    site = json.loads((work / ".hivemind" / "demo-site.json").read_text())
    assert set(site["pids"]) == {"redis", "nodepool", "bridge", "worker-cpu", "console"}
    # The console is up, and the demo said where and with which password.
    password = (work / ".hivemind" / "console" / "password").read_text().strip()
    assert f"console on {site['console']} (password {password}" in out
    with urllib.request.urlopen(site["console"] + "login", timeout=10) as reply:
        assert reply.status == 200
    assert all(running(pid) for pid in site["pids"].values()), out
    stopped = subprocess.run(demo("--stop"), cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not any(running(pid) for pid in site["pids"].values())
    assert leftovers(tmp_path) == []
