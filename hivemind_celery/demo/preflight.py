"""What this machine offers the demo, and what the demo does about what it lacks.

Decisions (each one is said out loud by the runner):
- Docker reachable and the task image present: the Docker runtime.
- Docker reachable, image missing: build it with scripts/build-images.sh when we
  are root and debootstrap is installed (about a minute, offline-capable);
  otherwise fall back to the process runtime and say how to build the image.
- No Docker: the process runtime (no isolation), with a loud warning.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Preflight:
    runtime: str  # "docker" or "process"
    task_image: str
    notes: list[str] = field(default_factory=list)  # said plainly
    warnings: list[str] = field(default_factory=list)  # said loudly
    gpus: list[str] = field(default_factory=list)  # GPU names, empty without one


def docker_problem() -> str | None:
    """None when dockerd answers, else why not."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable dockerd
        return str(exc).splitlines()[0][:200] or type(exc).__name__
    return None


def image_present(image: str) -> bool:
    import docker

    client = docker.from_env(timeout=30)
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()
    return True


def build_script(repo_root: Path) -> Path | None:
    script = repo_root / "scripts" / "build-images.sh"
    return script if script.is_file() else None


def can_build_images(repo_root: Path) -> str | None:
    """None when this process can build the task image itself, else why not."""
    if build_script(repo_root) is None:
        return f"scripts/build-images.sh is not in {repo_root} (run the demo from a checkout)"
    if os.geteuid() != 0:
        return "building needs root (debootstrap)"
    if shutil.which("debootstrap") is None:
        return "debootstrap is not installed (apt-get install debootstrap)"
    return None


def build_images(repo_root: Path, log_path: Path, image: str) -> None:
    script = build_script(repo_root)
    assert script is not None
    with open(log_path, "ab") as log:
        done = subprocess.run([str(script)], stdout=log, stderr=subprocess.STDOUT, cwd=repo_root,
                              env=os.environ | {"HIVEMIND_TASK_IMAGE": image}, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/build-images.sh failed (status {done.returncode}); see {log_path}")


def detect_gpus() -> list[str]:
    from hivemind_celery.gpu import list_gpus

    try:
        return [gpu.name for gpu in list_gpus()]
    except Exception:  # noqa: BLE001 - detection trouble means "no GPU" for the demo
        return []


def check(repo_root: Path, log_dir: Path, wanted_runtime: str | None, task_image: str,
          say=print) -> Preflight:
    """Decide the runtime; builds the task image when it must and can.
    `say` reports long steps as they start. Raises RuntimeError when the
    runtime the user asked for cannot work."""
    gpus = detect_gpus()
    if wanted_runtime == "process":
        return Preflight("process", task_image, warnings=[PROCESS_WARNING], gpus=gpus)
    problem = docker_problem()
    if problem is not None:
        how = ("start dockerd (`dockerd &` as root, or `systemctl start docker`) and make sure this user "
               "may use /var/run/docker.sock")
        if wanted_runtime == "docker":
            raise RuntimeError(f"Docker is not reachable ({problem}); {how}")
        return Preflight("process", task_image, gpus=gpus,
                         warnings=[f"Docker is not reachable ({problem}). {how}.", PROCESS_WARNING])
    if image_present(task_image):
        return Preflight("docker", task_image, notes=[f"Docker is up; tasks run in {task_image}"], gpus=gpus)
    why_not = can_build_images(repo_root)
    if why_not is None:
        log_path = log_dir / "build-images.log"
        say(f"The task image {task_image} is missing: building it now with scripts/build-images.sh "
            f"(debootstrap, about a minute; log: {log_path})")
        build_images(repo_root, log_path, task_image)
        return Preflight("docker", task_image, gpus=gpus,
                         notes=[f"built the task image {task_image}"])
    how = f"build it with `scripts/build-images.sh` as root (needs debootstrap); here: {why_not}"
    if wanted_runtime == "docker":
        raise RuntimeError(f"the task image {task_image} is missing; {how}")
    return Preflight("process", task_image, gpus=gpus,
                     warnings=[f"The task image {task_image} is missing; {how}.", PROCESS_WARNING])


PROCESS_WARNING = (
    "Using the PROCESS runtime (HIVEMIND_RUNTIME=process): tasks run as plain processes on this "
    "machine with NO isolation. Fine for the bundled examples; never for strangers' tasks."
)
