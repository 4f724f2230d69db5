"""Four GPUs of different memory for tests, through the NVML stand-in in
tests/usage/nvml_standin/ (no GPU can exist on the test machine)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hivemind_celery.usage import gpu

STANDIN_DIR = Path(__file__).resolve().parent / "nvml_standin"
FOUR_GPUS = [
    {"name": "Stand-in A100 80GB", "uuid": "GPU-0000aaaa-0000-4000-8000-000000000000", "memory_mb": 81920},
    {"name": "Stand-in A100 40GB", "uuid": "GPU-1111bbbb-1111-4111-8111-111111111111", "memory_mb": 40960},
    {"name": "Stand-in RTX 4090", "uuid": "GPU-2222cccc-2222-4222-8222-222222222222", "memory_mb": 24564},
    {"name": "Stand-in T4", "uuid": "GPU-3333dddd-3333-4333-8333-333333333333", "memory_mb": 15360},
]
UUIDS = [g["uuid"] for g in FOUR_GPUS]


def worker_env(gpus: list[dict] = FOUR_GPUS) -> dict[str, str]:
    """What a `celery worker` subprocess needs to see the stand-in GPUs."""
    root = str(Path(__file__).resolve().parents[2])
    return {"PYTHONPATH": f"{STANDIN_DIR}:{root}", "NVML_STANDIN_GPUS": json.dumps(gpus)}


@contextmanager
def standin_gpus(gpus: list[dict] = FOUR_GPUS) -> Iterator[None]:
    """In this process: usage/gpu.py sees `gpus` through the stand-in, then
    forgets it again (NVML is initialised once per process)."""
    before = os.environ.get("NVML_STANDIN_GPUS")
    os.environ["NVML_STANDIN_GPUS"] = json.dumps(gpus)
    sys.path.insert(0, str(STANDIN_DIR))
    sys.modules.pop("pynvml", None)
    gpu._nvml, gpu._nvml_tried = None, False
    try:
        yield
    finally:
        sys.path.remove(str(STANDIN_DIR))
        sys.modules.pop("pynvml", None)
        gpu._nvml, gpu._nvml_tried = None, False
        if before is None:
            os.environ.pop("NVML_STANDIN_GPUS", None)
        else:
            os.environ["NVML_STANDIN_GPUS"] = before
