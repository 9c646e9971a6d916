"""Compiled kernels: numba's ``njit`` with its on-disk cache wherever one can be written.

A kernel compiles at its first call (seconds); with ``cache=True`` numba keeps
the machine code beside the source or in the user's cache folder, so later
processes load it in a fraction of a second. Where neither folder is writable
(a read-only install under a locked-down account) numba refuses ``cache=True``
when the module is imported, which would take the whole module down; the
kernel then compiles once per process instead. ``NUMBA_CACHE_DIR`` points the
cache elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from numba import njit

__all__ = ["kernel"]


def kernel(**options: Any) -> Callable[[Callable], Callable]:
    """Decorator: ``numba.njit(cache=True, **options)``, or without the cache when numba has nowhere to keep it.

    >>> @kernel(nogil=True)
    ... def twice(x):
    ...     return 2 * x
    >>> twice(21)
    42
    """

    def compile_lazily(function: Callable) -> Callable:
        try:
            return njit(cache=True, **options)(function)
        except RuntimeError:  # numba: "cannot cache function ...: no locator available"
            return njit(**options)(function)

    return compile_lazily
