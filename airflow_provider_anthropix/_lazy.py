"""PEP 562 lazy exports for a package's ``__init__``: names imported from their module on first use.

The packages that a DAG file reaches (``api``, ``io``) list their public names here instead
of importing them, so that the dag-processor does not load the HTTP clients or the export
pipeline while it parses. Only the standard library's ``importlib`` is imported here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    namespace: dict[str, Any], names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose public names live in other modules.

    :param namespace: the package's ``globals()``; a name, once imported, is cached there so
        the next access does not come back here.
    :param names: public name -> the module that defines it.
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        """Import the defining module of ``name`` on first use and cache the value in the package."""
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
