"""Names a package's face offers without importing their module until first asked
for (PEP 562), for modules that would load what the asker may not want: psutil,
prometheus, the Docker SDK, the worker. The bridge imports `hivemind_celery.site`
for the registry; it must not load the disk gate's psutil with it.

A face lists each such name twice: here (name -> module) and under `if TYPE_CHECKING:`
as a plain import, which type checkers and tests/system/test_layers.py read."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_names(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package` that imports `names[name]` on first use
    (a name mapped to `package.name` is that submodule itself)."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        imported = importlib.import_module(module)
        value = imported if module == f"{package}.{name}" else getattr(imported, name)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    return __getattr__
