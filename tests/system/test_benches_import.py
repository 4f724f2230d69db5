"""Every benchmark still imports (the helpers it takes from the tests' kits moved
before, and two benches broke without anyone running them) and has a main()."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHES = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "bench").glob("bench_*.py"))


def test_there_are_benches() -> None:
    assert len(BENCHES) >= 5, BENCHES


@pytest.mark.parametrize("name", BENCHES)
def test_bench_imports(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert callable(getattr(module, "main", None)), f"bench/{name}.py has no main()"
