"""Tests share set-ups through conftest.py fixtures and kit modules, never by importing
each other: no module under tests/ imports a test module (test_*.py) or a conftest,
and none imports a fixture by name (pytest hands fixtures to tests from conftest.py).
Read from the source with ast, function-level imports too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.services_kit import ROOT

TESTS = ROOT / "tests"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path, tree: ast.AST) -> list[tuple[int, str, str | None]]:
    """(line, module, name) for every import; name is None for `import module`, and for
    `from package import thing` the pair is given both ways (thing may be a module)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    found: list[tuple[int, str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                found.append((node.lineno, base, alias.name))
                found.append((node.lineno, f"{base}.{alias.name}", None))
    return found


def is_test_module(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return last.startswith("test_") or last == "conftest"


def fixtures_of(module: str) -> set[str]:
    """Names defined with @pytest.fixture in a module of this checkout (empty for others)."""
    path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    if not path.is_file():
        return set()
    return {
        node.name
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and any("fixture" in ast.unparse(decorator) for decorator in node.decorator_list)
    }


def wrong_imports(path: Path, source: str) -> list[str]:
    problems = []
    for line, module, name in imported(path, ast.parse(source)):
        if is_test_module(module) and (module.startswith("tests.") or "." not in module):
            problems.append(f"{path.relative_to(ROOT)}:{line} imports {module}: move what it shares to a kit or conftest.py")
        if name is not None and name in fixtures_of(module):
            problems.append(
                f"{path.relative_to(ROOT)}:{line} imports the fixture {name} from {module}: define it in a conftest.py instead"
            )
    return list(dict.fromkeys(problems))  # one line per wrong import, however many names it takes


def test_no_test_module_imports_another_or_a_conftest_or_a_fixture() -> None:
    problems = [problem for path in sorted(TESTS.rglob("*.py")) for problem in wrong_imports(path, path.read_text())]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "source",
    [
        "from tests.bridge.test_bridge_service import add_worker\n",
        "from tests.conftest import make_zip\n",
        "from conftest import ROOT\n",
        "import tests.nodepool.test_nodepool_auth\n",
        "from tests.usage import test_usage_exact\n",
        "from . import test_bridge_relay\n",
        "def later():\n    from tests.conftest import ROOT\n",
        "from tests.console.conftest import page\n",
        "from tests.bridge.conftest import start_bridge\n",
    ],
)
def test_the_check_sees_each_kind_of_wrong_import(source: str) -> None:
    assert wrong_imports(TESTS / "bridge" / "test_example.py", source)


def test_kits_may_be_imported() -> None:
    source = "from tests.bridge_kit import RecordingPool\nfrom tests.services_kit import make_zip\n"
    assert wrong_imports(TESTS / "bridge" / "test_example.py", source) == []
