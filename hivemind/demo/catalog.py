"""The bundled examples (package data: hivemind/demo/examples/, which the
checkout's examples/ points at), what each should end as, and what a finished
one's result zip says about it."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REPORT_NAME = "execution_report.json"


@dataclass(frozen=True)
class Example:
    name: str  # folder under hivemind/demo/examples/
    expected: str  # TaskStatus value it should end with
    what: str
    memory_gb: int = 1
    cpu_score: int = 100  # one core at the default HIVEMIND_CPU_SCORE_PER_CORE
    gpu_score: int = 0

    @property
    def wants_gpu(self) -> bool:
        return self.gpu_score > 0


EXAMPLES: tuple[Example, ...] = (
    Example("cpu_task", "succeeded", "CPU-bound Python writing result files"),
    Example("requirements_task", "succeeded", "requirements.txt installed before it runs"),
    Example("failing_task", "failed", "fails on purpose (exit status 1)"),
    Example("slow_task", "timed_out", "runs past the site's timeout"),
    Example("gpu_task", "succeeded", "lists its GPUs (gpu queue)", gpu_score=100),
)


def examples_dir() -> Path:
    """The examples shipped inside the package, wherever it is installed."""
    return Path(__file__).resolve().parent / "examples"


def missing_examples(names: Iterable[str]) -> str | None:
    """None when every named example is on disk, else what is missing and the fix."""
    folder = examples_dir()
    missing = [name for name in names if not (folder / name / "main.py").is_file()]
    if not missing:
        return None
    return (
        f"the bundled examples {', '.join(missing)} are not in {folder} (an incomplete install); "
        "reinstall the package: pip install --force-reinstall hivemind-celery"
    )


def zip_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink() and "__pycache__" not in path.parts:
                archive.write(path, path.relative_to(folder).as_posix())
    return buf.getvalue()


@dataclass(frozen=True)
class Finished:
    """What the result zip's execution_report.json says."""

    status: str
    exit_code: int | None
    duration_s: float
    cpu_seconds: float | None
    memory_peak_bytes: int | None
    reward: int | None
    reason: str


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_report(result_zip: bytes) -> Finished:
    """Parse the report leniently: a result from an older or foreign worker may
    lack fields, and the table shows what is there."""
    try:
        with zipfile.ZipFile(io.BytesIO(result_zip)) as archive:
            report = json.loads(archive.read(REPORT_NAME))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        return Finished("unknown", None, 0.0, None, None, None, f"no readable {REPORT_NAME}: {exc}")
    usage = report.get("usage") if isinstance(report.get("usage"), dict) else {}
    peak = _number(usage.get("memory_peak_bytes"))
    reward = _number(report.get("reward"))
    exit_code = _number(report.get("exit_code"))
    return Finished(
        status=str(report.get("status", "unknown")),
        exit_code=None if exit_code is None else int(exit_code),
        duration_s=_number(report.get("duration_seconds")) or 0.0,
        cpu_seconds=_number(usage.get("cpu_seconds")),
        memory_peak_bytes=None if peak is None else int(peak),
        reward=None if reward is None else int(reward),
        reason=str(report.get("reason", ""))[:300],
    )
