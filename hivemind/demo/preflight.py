"""What this machine offers the demo, and what the demo does about what it lacks,
all decided before any part of the site starts.

Decisions (each one is said out loud by the runner):
- Something the demo cannot do without (its examples, a redis-server): stop
  before starting anything, saying what is missing and the command that fixes it.
- Docker answers: the Docker runtime. Installed but not running, and we may
  (root or sudo): the demo starts dockerd (dockerd.py) and stops it at the end.
- The task image missing: build it with build-images.sh (package data; the
  checkout's scripts/build-images.sh links to it) when we may; else the
  process runtime, saying how to build it.
- Docker truly cannot run: the process runtime, with a warning that says the
  README's isolation promise does not hold for this run, and the fix.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hivemind.demo import dockerd
from hivemind.demo.catalog import missing_examples
from hivemind.demo.services import MissingTool, flower_installed, redis_server_binary

FLOWER_FIX = "pip install 'hivemind-celery[flower]'"


@dataclass
class Preflight:
    runtime: str  # "docker" or "process"
    task_image: str
    wanted_runtime: str | None = None  # what --runtime asked for
    docker: dockerd.DockerPlan | None = None  # None: Docker was not considered (--runtime process)
    notes: list[str] = field(default_factory=list)  # said plainly
    warnings: list[str] = field(default_factory=list)  # said loudly
    gpus: list[str] = field(default_factory=list)  # GPU names, empty without one

    def fall_back(self, why: str, fix: str) -> None:
        """Docker cannot serve this run: the process runtime, or an error when
        --runtime docker asked for it."""
        if self.wanted_runtime == "docker":
            raise MissingTool(f"{why}.\nFix: {fix}")
        self.runtime = "process"
        self.warnings.append(f"{why}.\nFix: {fix}\n\n{NO_ISOLATION}")


NO_ISOLATION = (
    "So this run uses the PROCESS runtime (HIVEMIND_RUNTIME=process): the examples run as plain processes "
    "of this user with NO isolation. The README's promise, every task in a locked-down container (no "
    "network, read-only root, non-root user, no capabilities, CPU, memory, process and disk limits), "
    "does NOT hold for this run. Fine for the bundled examples; never for strangers' tasks."
)
CHOSEN_PROCESS = (
    "--runtime process: the examples run as plain processes of this user with NO isolation; the README's "
    "promise of a locked-down container per task does NOT hold for this run. Never use it for strangers' tasks."
)


def image_present(host: dockerd.DockerHost, image: str) -> bool:
    import docker

    client = dockerd.client(host)
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()
    return True


def build_script() -> Path | None:
    """build-images.sh is package data (scripts/build-images.sh links to it), so an
    installed demo can build images too."""
    script = Path(__file__).resolve().parent / "build-images.sh"
    return script if script.is_file() else None


def build_problem(ask: bool = True) -> tuple[str, str] | None:
    """None when this machine can build the task image, else (what is missing, the fix)."""
    if build_script() is None:
        return (
            "build-images.sh is missing from the package (an incomplete install)",
            "pip install --force-reinstall hivemind-celery",
        )
    missing = [tool for tool in ("debootstrap", "busybox") if shutil.which(tool) is None]
    if missing:
        return (
            f"building the task image needs {' and '.join(missing)}, not installed",
            "sudo apt-get install debootstrap busybox-static  (or: make deps)",
        )
    prefix, why_not = dockerd.root_prefix(ask)
    if prefix is None:
        return f"building the task image needs root (debootstrap) and {why_not}", "run the demo as root"
    return None


def build_image(host: dockerd.DockerHost, image: str, log_path: Path, ask: bool = True) -> None:
    script = build_script()
    prefix, _ = dockerd.root_prefix(ask)
    assert script is not None and prefix is not None, "build_problem() said it can"
    # `env` carries the settings through sudo, which would drop them.
    argv = [*prefix, "env", f"DOCKER_HOST={host.url}", f"HIVEMIND_TASK_IMAGE={image}", "bash", str(script)]
    with open(log_path, "ab") as log:
        done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} failed (status {done.returncode}); see {log_path}")


def detect_gpus() -> list[str]:
    from hivemind_celery.usage import list_gpus

    try:
        return [gpu.name for gpu in list_gpus()]
    except Exception:  # noqa: BLE001 - detection trouble means "no GPU" for the demo
        return []


def check(wanted_runtime: str | None, task_image: str, examples: Sequence[str], flower: bool, ask: bool = True) -> Preflight:
    """Everything the demo needs, checked before it starts anything. Raises
    MissingTool naming every missing piece with its fix; decides the runtime."""
    missing = []
    problem = missing_examples(examples)
    if problem:
        missing.append(problem)
    try:
        redis_server_binary()
    except MissingTool as exc:
        missing.append(str(exc))
    if missing:
        raise MissingTool("\n".join(missing))
    pre = Preflight("docker", task_image, wanted_runtime, gpus=detect_gpus())
    if flower and not flower_installed():
        pre.notes.append(f"Flower (the dashboard) is not installed, so it will not start; to get it: {FLOWER_FIX}")
    if wanted_runtime == "process":
        pre.runtime = "process"
        pre.warnings.append(CHOSEN_PROCESS)
        return pre
    pre.docker = dockerd.plan_docker(dockerd.docker_host(), ask)
    if pre.docker.action == "none":
        pre.fall_back(f"Docker cannot run here: {pre.docker.why}", pre.docker.fix)
    elif pre.docker.action == "use" and not image_present(pre.docker.host, task_image):
        cannot = build_problem(ask)
        if cannot is not None:
            pre.fall_back(f"The task image {task_image} is missing and cannot be built here: {cannot[0]}", cannot[1])
    return pre


def ensure_image(pre: Preflight, log_dir: Path, say=print, ask: bool = True) -> None:
    """With Docker answering (perhaps just started): build the task image when
    it is missing, or fall back when it cannot be built (known before starting
    anything, unless the demo had to start dockerd to ask it)."""
    if pre.runtime != "docker" or pre.docker is None:
        return
    if image_present(pre.docker.host, pre.task_image):
        pre.notes.append(f"Docker is up; tasks run in {pre.task_image}")
        return
    cannot = build_problem(ask)
    if cannot is not None:
        pre.fall_back(f"The task image {pre.task_image} is missing and cannot be built here: {cannot[0]}", cannot[1])
        return
    log_path = log_dir / "build-images.log"
    say(
        f"The task image {pre.task_image} is missing: building it now with build-images.sh "
        f"(debootstrap, a few minutes the first time; log: {log_path})"
    )
    build_image(pre.docker.host, pre.task_image, log_path, ask)
    pre.notes.append(f"built the task image {pre.task_image}; tasks run in it")
