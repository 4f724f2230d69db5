"""The layers point one way, read from the source itself.

Every import in every module (function-level and TYPE_CHECKING ones included)
is found with `ast`, so an import hidden inside a function cannot make a
circle between packages unseen. An edge takes from a hivemind_celery package
only what its face (`__init__.py`, its `__all__`) offers. Pure reading of the
tree: nothing is imported.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("hivemind_celery", "hivemind", "bridge", "nodepool", "proto", "vpn")
EDGES = ("hivemind", "bridge", "nodepool", "proto", "vpn")
# hivemind_celery's own layers, bottom first: a module may import its own layer
# or one below it. "client" is client.py (the Celery client: configuration and the
# task's name); "app" is celery_app.py (the worker app) and the package's __init__.py.
WORKER_LAYERS = ("core", "client", "usage", "observability", "payloads", "runtime", "site", "task", "worker", "app")
# What each edge may import of ours (besides itself and third-party code).
EDGE_MAY_IMPORT = {
    "proto": set(),
    # the WireGuard tunnel, shared by the bridge, the CLI and our Node Pool (the hub)
    "vpn": {"hivemind_celery.core"},
    "nodepool": {"proto", "hivemind_celery.core", "vpn"},
    "bridge": {"proto", "hivemind_celery", "vpn"},
    "hivemind": {"proto", "hivemind_celery", "bridge", "nodepool", "vpn"},
}
NO_CELERY_NO_DOCKER = ("celery", "kombu", "billiard", "docker")
DATA_DIRS = ("hivemind/demo/examples",)  # task code for the demo, not the project's


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith(DATA_DIRS):
                found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every module `path` imports, absolute, with its line."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:  # `from pkg import module` imports pkg.module
                yield f"{target}.{alias.name}", node.lineno


MODULES = project_modules()


def ours(target: str) -> str | None:
    """The project module `target` names (longest match), or None if third-party."""
    parts = target.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def all_imports() -> list[tuple[str, str, int]]:
    edges = set()
    for name, path in MODULES.items():
        for target, line in imports_of(name, path):
            module = ours(target)
            if module is not None and module != name:
                edges.add((name, module, line))
    return sorted(edges)


IMPORTS = all_imports()


def face_of(package: str) -> set[str]:
    """The names a hivemind_celery package's __init__.py lists in `__all__` (read, not imported)."""
    init = ROOT / "hivemind_celery" / package / "__init__.py"
    for node in ast.parse(init.read_text(), str(init)).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return set(ast.literal_eval(node.value))
    return set()


WORKER_PACKAGES = sorted(p.parent.name for p in (ROOT / "hivemind_celery").glob("*/__init__.py"))
FACES = {package: face_of(package) for package in WORKER_PACKAGES}


def reaches_inside(node: ast.stmt) -> Iterator[str]:
    """What an import statement takes from inside a hivemind_celery package: a module
    below a package's face, or a name the face does not offer."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] == "hivemind_celery" and len(parts) > 2:
                yield alias.name
    elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
        parts = node.module.split(".")
        if parts[0] != "hivemind_celery" or len(parts) < 2:
            return
        if len(parts) > 2:
            yield node.module
        elif parts[1] in FACES:
            for alias in node.names:
                if alias.name not in FACES[parts[1]]:
                    yield f"{node.module}.{alias.name} (not in its face's __all__)"


def worker_layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "celery_app":
        return "app"
    assert parts[1] in WORKER_LAYERS, f"{module}: hivemind_celery/{parts[1]} is in no layer (add it to WORKER_LAYERS)"
    return parts[1]


def test_the_walk_sees_function_level_imports() -> None:
    # hivemind/cli/bridge_cmd.py imports bridge inside its command function.
    assert any(src.startswith("hivemind.cli.") and dst.startswith("bridge") for src, dst, _ in IMPORTS)
    assert len(MODULES) > 100 and len(IMPORTS) > 300


def test_hivemind_celery_imports_no_edge() -> None:
    bad = [
        f"{src}:{line} imports {dst}"
        for src, dst, line in IMPORTS
        if src.split(".")[0] == "hivemind_celery" and dst.split(".")[0] in EDGES
    ]
    assert bad == []


@pytest.mark.parametrize("edge", sorted(EDGE_MAY_IMPORT))
def test_each_edge_imports_only_what_is_below_it(edge: str) -> None:
    allowed = EDGE_MAY_IMPORT[edge] | {edge}
    bad = [
        f"{src}:{line} imports {dst}"
        for src, dst, line in IMPORTS
        if src.split(".")[0] == edge and not any(dst == a or dst.startswith(a + ".") for a in allowed)
    ]
    assert bad == []


def test_every_package_has_a_face() -> None:
    assert {"core", "site", "task", "payloads"} <= set(WORKER_PACKAGES)
    bare = [package for package, names in FACES.items() if not names]
    assert bare == [], "each hivemind_celery package lists what it offers in its __init__.py's __all__"


@pytest.mark.parametrize("edge", sorted(EDGE_MAY_IMPORT))
def test_edges_import_only_package_faces(edge: str) -> None:
    """`from hivemind_celery.task import read_output` is fine; `hivemind_celery.task.streams` is not."""
    bad = []
    for name, path in MODULES.items():
        if name.split(".")[0] != edge:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                bad += [f"{name}:{node.lineno} imports {inside}" for inside in reaches_inside(node)]
    assert bad == []


def test_the_face_check_sees_an_inside_import() -> None:
    inside = ast.parse("from hivemind_celery.task.outcomes import outcome_of").body[0]
    face = ast.parse("from hivemind_celery.task import outcome_of").body[0]
    unlisted = ast.parse("from hivemind_celery.task import utcnow").body[0]
    assert list(reaches_inside(inside)) == ["hivemind_celery.task.outcomes"]
    assert list(reaches_inside(face)) == []
    assert list(reaches_inside(unlisted)) == ["hivemind_celery.task.utcnow (not in its face's __all__)"]


def test_worker_layers_point_down() -> None:
    rank = {layer: i for i, layer in enumerate(WORKER_LAYERS)}
    bad = []
    for src, dst, line in IMPORTS:
        same_package = src.split(".")[0] == dst.split(".")[0] == "hivemind_celery"
        if same_package and rank[worker_layer(dst)] > rank[worker_layer(src)]:
            bad.append(f"{src}:{line} ({worker_layer(src)}) imports {dst} ({worker_layer(dst)})")
    assert bad == []


def test_core_has_no_celery_and_no_docker() -> None:
    bad = []
    for name, path in MODULES.items():
        if name.startswith("hivemind_celery.core"):
            for target, line in imports_of(name, path):
                if target.split(".")[0] in NO_CELERY_NO_DOCKER:
                    bad.append(f"{name}:{line} imports {target}")
    assert bad == []


def test_no_import_cycles_between_packages() -> None:
    """Packages: the top-level ones, and hivemind_celery's and hivemind's folders."""

    def package(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:2]) if parts[0] in ("hivemind_celery", "hivemind") and len(parts) > 2 else parts[0]

    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst, _ in IMPORTS:
        a, b = package(src), package(dst)
        if a != b and not b.startswith(a + ".") and not a.startswith(b + "."):
            graph[a].add(b)
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in seen:
                visit(nxt, path + [nxt])
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node, [node])
    assert cycles == []
