"""Package surfaces read on first use (PEP 562): a package lists its public names and the module
each lives in, and `surface` gives it the `__getattr__` that imports a name's module when the name
is first read. So a command's `--help` loads no jax (`tests/test_startup.py`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def surface(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """The `__getattr__` of `package`, whose public `names` map to the modules defining them."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(names[name]), name)

    return __getattr__
