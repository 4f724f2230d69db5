"""The demo modules' shared set-up: a copy of the checkout and a fresh working folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.demo.demo_kit import copy_checkout
from tests.services_kit import PYTHON_IMAGE


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    repo = copy_checkout(tmp_path / "repo")
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVEMIND_") and k != "REDIS_URL"}
    env.update(PYTHONPATH=str(repo), HIVEMIND_TASK_IMAGE=PYTHON_IMAGE, COLUMNS="120")
    where = subprocess.run(
        [sys.executable, "-c", "import hivemind_celery; print(hivemind_celery.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(repo)), f"the copy is not the code under test: {where}"
    return repo, work, env
