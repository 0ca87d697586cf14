"""The orthonormal DCT-II matrix shared by the cepstral measures (numpy only)."""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=4)
def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix (columns are the cosine bases): ``x @ M`` equals scipy's
    ``dct(x, norm="ortho")``. Read-only: it is shared by every caller."""
    k = np.arange(n)[np.newaxis, :]
    m = np.cos(np.pi * (np.arange(n)[:, np.newaxis] + 0.5) * k / n) * np.sqrt(2.0 / n)
    m[:, 0] /= np.sqrt(2.0)
    m.setflags(write=False)
    return m
