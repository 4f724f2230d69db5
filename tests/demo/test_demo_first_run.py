"""`hivemind demo` on a first run, as a newcomer meets it:

- a fresh `git clone`, a fresh virtual environment and a NON-editable
  `pip install .`, then `hivemind demo` from another folder: the examples come
  from the installed package and run in Docker;
- dockerd installed but not running: the demo starts it and stops it after.
  The machine's own dockerd must stay up for everyone else, so the test points
  DOCKER_HOST at a socket nobody serves; the demo starts a daemon of its own
  there (own data and exec roots, own bridge), which has no images yet, so the
  demo builds them as a first-run user's demo would (build-images.sh, from its
  cached Debian root);
- what the demo cannot do without is reported before anything starts.

Real parts throughout: pip, dockerd, Redis, the Node Pool, the bridge, Celery.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import psutil
import pytest

from tests.demo.demo_kit import demo, leftovers
from tests.services_kit import PYTHON_IMAGE, ROOT

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]

# Wheels of the package's dependencies and build requirements, made once per
# machine (from PyPI) and reused offline, so a fresh venv installs in seconds.
WHEELHOUSE = Path("/var/cache/hivemind/wheels")
QUICK = ("--only", "cpu_task", "--only", "failing_task", "--max-wait", "300")


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HIVEMIND_", "PIP_")) and k not in ("REDIS_URL", "PYTHONPATH", "VIRTUAL_ENV")
    }
    env.update(HIVEMIND_TASK_IMAGE=PYTHON_IMAGE, COLUMNS="80", **extra)
    return env


def pip_install(python: Path, target: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(WHEELHOUSE), str(target)],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="session")
def fresh_install(tmp_path_factory) -> Path:
    """A git clone of the committed project in a fresh venv, installed with a
    plain (non-editable) `pip install`; returns the venv's bin folder."""
    base = tmp_path_factory.mktemp("first-run")
    clone = base / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    venv.create(base / "venv", with_pip=True)
    python = base / "venv" / "bin" / "python"
    done = pip_install(python, clone)
    if done.returncode != 0:
        # First time on this machine (or new dependencies): fill the wheelhouse from PyPI.
        WHEELHOUSE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(WHEELHOUSE), str(clone), "hatchling", "grpcio-tools>=1.66,<2"],
            check=True,
            timeout=900,
        )
        done = pip_install(python, clone)
    assert done.returncode == 0, done.stdout + done.stderr
    shutil.rmtree(clone)  # the demo must not need the checkout any more
    return python.parent


@pytest.mark.timeout(900)
def test_pip_install_then_demo_from_anywhere(fresh_install: Path, docker_client, tmp_path: Path):
    bin_dir = fresh_install
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import hivemind_celery; print(hivemind_celery.__file__)"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "site-packages" in where, f"not an installed copy: {where}"
    work = tmp_path / "somewhere-else"
    work.mkdir()
    # All the examples, as a newcomer runs it (requirements_task's set-up step reaches PyPI).
    done = subprocess.run(
        [str(bin_dir / "hivemind"), "demo", "--exit-when-done", "--max-wait", "400"],
        cwd=work,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    summary = json.loads((work / ".hivemind" / "demo-summary.json").read_text())
    assert summary["runtime"] == "docker", out
    assert summary["started_dockerd"] is False, out  # the machine's dockerd was up
    assert re.search(r"\(docker\s+runtime", out) and "NO ISOLATION" not in out, out
    outcomes = {row["example"]: row["outcome"] for row in summary["examples"]}
    assert outcomes == {
        "cpu_task": "succeeded",
        "requirements_task": "succeeded",
        "failing_task": "failed",
        "slow_task": "timed_out",
        "gpu_task": "succeeded" if summary["gpus"] else "skipped",
    }, out
    # The fresh venv has no Flower: the hint names the extra that brings it.
    assert re.search(r"pip\s+install\s+'hivemind-celery\[flower\]'", out), out
    # The live table's last frame: every column filled, the task's last output line kept
    # (stdout's or stderr's, whichever the log has last), 80 columns.
    frame = [line for line in out.splitlines() if line.startswith("│ failing_task")]
    assert frame and re.search(r"│ failed +│ +\d+s │ (FileNotFoundError|about to read input.csv)", frame[0]), out
    assert all(len(line) <= 80 for line in out.splitlines() if line.startswith(("│", "┃", "┏", "└"))), out
    assert "Site stopped." in out
    assert leftovers(tmp_path) == []


def daemon_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


@pytest.mark.timeout(900)
@pytest.mark.skipif(os.geteuid() != 0, reason="starting a dockerd of the test's own needs root")
def test_demo_starts_a_stopped_dockerd_and_stops_it(checkout, docker_client, tmp_path):
    from hivemind.demo import dockerd

    repo, work, env = checkout
    sock_dir = Path(tempfile.mkdtemp(prefix="hm-dd-", dir="/tmp"))  # short: a socket path has 108 bytes
    host = dockerd.docker_host({"DOCKER_HOST": f"unix://{sock_dir}/docker.sock"})
    assert dockerd.socket_state(host.socket) == "absent"
    own = dockerd.own_daemon(host, work / ".hivemind")
    try:
        done = subprocess.run(
            demo("--exit-when-done", "--no-flower", *QUICK),
            cwd=work,
            env=env | {"DOCKER_HOST": host.url, "COLUMNS": "300"},
            capture_output=True,
            text=True,
            timeout=800,
        )
        out = done.stdout + done.stderr
        assert f"starting it on {host.socket}" in out, out
        assert done.returncode == 0, out
        summary = json.loads((work / ".hivemind" / "demo-summary.json").read_text())
        assert summary["started_dockerd"] is True and summary["docker_host"] == host.url, out
        assert summary["runtime"] == "docker", out
        assert {row["example"]: row["outcome"] for row in summary["examples"]} == {
            "cpu_task": "succeeded",
            "failing_task": "failed",
        }, out
        # It had no images: the demo built the task image on that daemon.
        assert f"The task image {PYTHON_IMAGE} is missing: building it" in out, out
        assert (own.state / "data").is_dir()
        # ...and stopped it after: nothing serves the socket, the daemon and its bridge are gone.
        assert "stopping dockerd (the demo started it)" in out, out
        assert dockerd.socket_state(host.socket) != "serving"
        pid = daemon_pid(own.state / "dockerd.pid")
        assert pid is None or not psutil.pid_exists(pid), out
        assert not dockerd.bridge_exists(own.bridge)
        assert leftovers(tmp_path) == []
        docker_client.ping()  # the machine's own dockerd is untouched

        # Left up with the site (--keep-running), it goes with `--stop`; its images stayed.
        kept = subprocess.run(
            demo("--keep-running", "--no-flower", "--only", "failing_task"),
            cwd=work,
            env=env | {"DOCKER_HOST": host.url, "COLUMNS": "300"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        out = kept.stdout + kept.stderr
        assert kept.returncode == 0, out
        assert f"starting it on {host.socket}" in out and "building it" not in out, out
        assert dockerd.socket_state(host.socket) == "serving" and dockerd.bridge_exists(own.bridge), out
        stopped = subprocess.run(
            demo("--stop"), cwd=work, env=env | {"DOCKER_HOST": host.url}, capture_output=True, text=True, timeout=200
        )
        out = stopped.stdout + stopped.stderr
        assert stopped.returncode == 0 and "stopping dockerd" in out, out
        assert dockerd.socket_state(host.socket) != "serving"
        assert not dockerd.bridge_exists(own.bridge)
        assert leftovers(tmp_path) == []
        docker_client.ping()
    finally:
        pid = daemon_pid(own.state / "dockerd.pid")
        if pid is not None and psutil.pid_exists(pid):
            psutil.Process(pid).terminate()
            psutil.Process(pid).wait(60)
        dockerd.remove_bridge(own.bridge)
        shutil.rmtree(sock_dir, ignore_errors=True)
        subprocess.run(["rm", "-rf", str(own.state), str(own.exec_root)], check=False)


@pytest.mark.timeout(300)
def test_no_docker_at_all_falls_back_and_says_isolation_is_off(checkout, tmp_path):
    """No dockerd on PATH and nobody on the socket: the process runtime, saying so loudly."""
    repo, work, env = checkout
    bare_path = tmp_path / "bin"
    bare_path.mkdir()
    for tool in ("redis-server", "git", "ip"):
        if shutil.which(tool):
            (bare_path / tool).symlink_to(shutil.which(tool))
    env = env | {"DOCKER_HOST": f"unix://{tmp_path}/nobody.sock", "PATH": str(bare_path), "COLUMNS": "100"}
    refused = subprocess.run(
        demo("--exit-when-done", "--no-flower", "--runtime", "docker", "--only", "failing_task"),
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = refused.stdout + refused.stderr
    assert refused.returncode == 1, out
    assert "Docker is not installed" in out and "apt-get install docker.io" in out, out
    assert not (work / ".hivemind" / "logs" / "redis.log").exists(), "a service started before the check"

    done = subprocess.run(
        demo("--exit-when-done", "--no-flower", "--only", "failing_task"),
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert json.loads((work / ".hivemind" / "demo-summary.json").read_text())["runtime"] == "process"
    flat = " ".join(out.replace("│", " ").split())
    assert "PROCESS runtime" in flat and "does NOT hold for this run" in flat, out
    assert "apt-get install docker.io" in flat, out
    assert leftovers(tmp_path) == []


@pytest.mark.timeout(120)
def test_missing_examples_stop_the_demo_before_anything_starts(checkout):
    repo, work, env = checkout
    (repo / "hivemind" / "demo" / "examples" / "cpu_task" / "main.py").unlink()
    done = subprocess.run(
        demo("--exit-when-done", "--only", "cpu_task"), cwd=work, env=env, capture_output=True, text=True, timeout=100
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "cpu_task" in out and "pip install --force-reinstall hivemind-celery" in " ".join(out.split()), out
    assert not (work / ".hivemind" / "logs" / "redis.log").exists(), "a service started before the check"
