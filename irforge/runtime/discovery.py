"""Finding declarations by convention: every module of a package that defines a given attribute (stages'
``STAGE``, trainers' ``TRAINER``) is registered, so adding one is adding a module."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any


def declarations(package: str, attribute: str, kind: type) -> dict[str, tuple[ModuleType, Any]]:
    """``name -> (module, declaration)`` for every module of ``package`` whose ``attribute`` is a ``kind``
    (which has a ``name``), in module-name order; two declarations of one name are an error."""
    root = importlib.import_module(package)
    found: dict[str, tuple[ModuleType, Any]] = {}
    for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package}.{info.name}")
        declared = getattr(module, attribute, None)
        if not isinstance(declared, kind):
            continue
        if declared.name in found:
            raise ValueError(f"two modules declare {attribute} '{declared.name}': "
                             f"{found[declared.name][0].__name__}, {module.__name__}")
        found[declared.name] = (module, declared)
    return found
