"""Lazy package exports (PEP 562): a name is imported from its submodule on first use.

Why: the front ends list every module's command at start; importing each
package's engine (torch, scikit-learn, PennyLane, SciPy) there cost seconds
of CPU per CLI call although one call runs one module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose public names live in submodules.

    Parameters
    ----------
    package : str
        The package's ``__name__`` (``qflow.routing``).
    exports : mapping
        Public name -> absolute module that defines it (``plan_routing`` -> ``qflow.routing._plan``).
    """
    module_globals = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module-level hook's required name
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        module_globals[name] = value  # later lookups skip this hook
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted({*module_globals, *exports})

    return __getattr__, __dir__
