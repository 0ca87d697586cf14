"""Small numeric helpers for the `check` path (numpy only).

``np.percentile`` and ``np.median`` import ``numpy.ma`` on first use (about 15 ms per process,
a tenth of the start-up budget of a pre-commit hook); these give the same answers (numpy's
default "linear" method) with a sort.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np


def percentile(a: Any, q: float, axis: int | None = None) -> Any:
    """``np.percentile(a, q, axis=axis)`` (linear interpolation between closest ranks), NaN-free input."""
    arr = np.asarray(a, dtype=np.float64)
    if axis is None:
        arr = arr.reshape(-1)
        axis = 0
    n = arr.shape[axis]
    if n == 0:
        raise ValueError("percentile of an empty array")
    if not 0.0 <= q <= 100.0:
        raise ValueError("percentile must be between 0 and 100")
    pos = (n - 1) * q / 100.0
    lo = int(np.floor(pos))
    hi = min(lo + 1, n - 1)
    part = np.partition(arr, [lo, hi] if hi != lo else [lo], axis=axis)
    a_lo = np.take(part, lo, axis=axis)
    a_hi = np.take(part, hi, axis=axis)
    frac = pos - lo
    out = a_lo + (a_hi - a_lo) * frac if frac else a_lo
    return out if np.ndim(out) else float(out)


def median(a: Any, axis: int | None = None) -> Any:
    """``np.median(a, axis=axis)``."""
    return percentile(a, 50.0, axis=axis)


@functools.lru_cache(maxsize=4)
def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix (columns are the cosine bases): ``x @ M`` equals scipy's
    ``dct(x, norm="ortho")``. Read-only: it is shared by every caller."""
    k = np.arange(n)[np.newaxis, :]
    m = np.cos(np.pi * (np.arange(n)[:, np.newaxis] + 0.5) * k / n) * np.sqrt(2.0 / n)
    m[:, 0] /= np.sqrt(2.0)
    m.setflags(write=False)
    return m
