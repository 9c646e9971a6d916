"""qflow.core.compiled.kernel: numba's disk cache when it can be kept, a per-process compile when not."""

from __future__ import annotations

import numpy as np
import pytest

from qflow.core import compiled


def _row_sums(a):
    out = np.zeros(a.shape[0])
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i] += a[i, j]
    return out


def test_kernel_asks_numba_for_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(compiled, "njit", lambda **options: calls.append(options) or (lambda f: f))
    compiled.kernel(nogil=True)(_row_sums)
    assert calls == [{"cache": True, "nogil": True}]


def test_kernel_compiles_without_the_cache_when_numba_has_nowhere_to_keep_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real_njit = compiled.njit
    asked = []

    def njit_without_cache_folder(**options):
        asked.append(options.get("cache", False))
        if options.get("cache"):
            raise RuntimeError("cannot cache function '_row_sums': no locator available for file 'x.py'")
        return real_njit(**options)

    monkeypatch.setattr(compiled, "njit", njit_without_cache_folder)
    sums = compiled.kernel(nogil=True)(_row_sums)
    a = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(sums(a), a.sum(axis=1))
    assert asked == [True, False]
