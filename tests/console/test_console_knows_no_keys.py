"""The console asks the site's packages for what it shows and knows no Redis key:
no key literal (the `hm:` prefix, read from core/keys.py) anywhere under
hivemind/console/, no use of the key module, and every import of
hivemind_celery through a package's face (`from hivemind_celery.site import X`),
never a module inside it. Pure reading of the source with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from hivemind_celery.core import keys
from tests.services_kit import ROOT

CONSOLE = ROOT / "hivemind" / "console"
KEY_PREFIX = keys.PREFIX + ":"
KEY_MODULE = "hivemind_celery.core.keys"
PACKAGES = {path.name for path in (ROOT / "hivemind_celery").iterdir() if (path / "__init__.py").exists()}


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def violations(source: str, where: str) -> list[str]:
    """What in this Python source knows a Redis key or reaches inside hivemind_celery."""
    found = []
    tree = ast.parse(source, where)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and KEY_PREFIX in node.value:
            found.append(f"{where}:{node.lineno}: a Redis key literal {node.value!r}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "hivemind_celery":
                    found.append(f"{where}:{node.lineno}: `import {alias.name}` (use a package face)")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "hivemind_celery":
            parts = (node.module or "").split(".")
            if len(parts) != 2 or parts[1] not in PACKAGES:
                found.append(f"{where}:{node.lineno}: from {node.module} import ... (not a package's face)")
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                if target == KEY_MODULE or _is_module(target):
                    found.append(f"{where}:{node.lineno}: imports the module {target}")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "keys"
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "core"
        ):
            found.append(f"{where}:{node.lineno}: uses core.keys")
    return found


def console_sources() -> list[Path]:
    return sorted(CONSOLE.rglob("*.py"))


def test_the_check_sees_what_it_looks_for() -> None:
    bad = """
from hivemind_celery.core import keys
from hivemind_celery.core.keys import site_problems
from hivemind_celery.site.registry import Registry
import hivemind_celery.core
KEY = "hm:site:running"
def f(c):
    return c.get(hivemind_celery.core.keys.task_usage("t"))
"""
    found = violations(bad, "bad.py")
    assert any("imports the module hivemind_celery.core.keys" in v for v in found), found
    assert any("from hivemind_celery.core.keys import" in v for v in found), found
    assert any("from hivemind_celery.site.registry import" in v for v in found), found
    assert any("`import hivemind_celery.core`" in v for v in found), found
    assert any("'hm:site:running'" in v for v in found), found
    assert any("uses core.keys" in v for v in found), found
    good = "from hivemind_celery.site import Registry, read_standing\nfrom hivemind_celery.core import Settings\n"
    assert violations(good, "good.py") == []


def test_the_console_sources_are_found() -> None:
    names = {path.relative_to(CONSOLE).as_posix() for path in console_sources()}
    assert {"app.py", "site_view.py", "deps.py", "routes/pages.py"} <= names


@pytest.mark.parametrize("path", console_sources(), ids=lambda p: p.relative_to(CONSOLE).as_posix())
def test_the_console_knows_no_redis_key_and_imports_only_faces(path: Path) -> None:
    assert violations(path.read_text(), str(path.relative_to(ROOT))) == []


def test_no_template_or_asset_holds_a_redis_key() -> None:
    assets = [p for p in CONSOLE.rglob("*") if p.is_file() and p.suffix in {".html", ".js", ".css"}]
    assert assets, "the templates and static files are found"
    assert [str(p.relative_to(ROOT)) for p in assets if KEY_PREFIX in p.read_text(errors="replace")] == []
