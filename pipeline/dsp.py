"""Filters for the `run` path with numpy alone: IIR filtering, filter design, moving max/mean.

Why not scipy.signal: importing it costs more per process than the filtering it would serve
(docs/design.md). These functions give scipy's answers (``sosfilt``,
``sosfiltfilt``, ``sosfilt_zi``, ``butter(..., output="sos")`` for high-passes, ``iirnotch``,
``ndimage.maximum_filter1d``/``uniform_filter1d`` with ``mode="nearest"``); the tests hold them
to scipy's results on real speech and random signals.

How an IIR section runs without a per-sample Python loop: it is split into partial fractions,
``H(z) = k0 + sum r_i / (1 - p_i/z)``, so each pole is a first-order recursion
``w[n] = r*x[n] + p*w[n-1]`` on the input itself (a resonant pair p, conj(p) is one complex
recursion whose real part counts twice). A recursion is solved block by block in closed form,
``w[n] = p**n * cumsum(r * x[k] * p**-k)``, and each block starts from the end of the one before.
Rounding stays at the level of float64 rounding times ``1/(1-|p|)**2``: about 1e-9 of full scale
for the narrowest hum notch used here. numpy's cumsum bounds the speed (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import math

import numpy as np

# A block may span at most ln(1e300)/-ln|p| samples: |p|**-block stays far from float64 overflow.
_MAX_GROWTH_LN = 300.0
# Work through long signals this many samples at a time (complex temporaries stay small).
_CHUNK = 1 << 16


# --------------------------------------------------------------------------- design


def butter_highpass(order: int, cutoff_hz: float, rate: int) -> np.ndarray:
    """Digital Butterworth high-pass (bilinear transform, pre-warped corner) as second-order
    sections: the response of ``scipy.signal.butter(order, cutoff_hz, "highpass", fs=rate, output="sos")``."""
    if order < 1 or not 0 < cutoff_hz < rate / 2:
        raise ValueError("order must be >= 1 and the cutoff between 0 and Nyquist")
    warped = 2 * rate * math.tan(math.pi * cutoff_hz / rate)
    k = np.arange(order)
    prototype = np.exp(1j * math.pi * (2 * k + order + 1) / (2 * order))  # left half-plane, |p| = 1
    analog = warped / prototype  # low-pass to high-pass: s -> warped / s
    digital = (2 * rate + analog) / (2 * rate - analog)
    sections = []
    for z in sorted(digital[digital.imag > 1e-12], key=lambda v: -abs(v)):
        g = abs(1 + z) ** 2 / 4  # unity gain at Nyquist, as the analog filter at infinity
        sections.append([g, -2 * g, g, 1.0, -2 * z.real, abs(z) ** 2])
    if order % 2:
        z = float(digital[np.argmin(np.abs(digital.imag))].real)
        g = (1 + z) / 2
        sections.append([g, -g, 0.0, 1.0, -z, 0.0])
    return np.array(sections)


def notch(freq_hz: float, q: float, rate: int) -> np.ndarray:
    """Second-order notch at ``freq_hz`` with bandwidth ``freq_hz / q`` (-3 dB), as one section:
    the coefficients of ``scipy.signal.iirnotch``."""
    w0 = 2 * math.pi * freq_hz / rate
    beta = math.tan(w0 / (2 * q))
    gain = 1 / (1 + beta)
    cw = math.cos(w0)
    return np.array([gain, -2 * gain * cw, gain, 1.0, -2 * gain * cw, 2 * gain - 1])


# --------------------------------------------------------------------------- filtering


def _poles(a1: float, a2: float) -> tuple[complex, ...]:
    """Roots of z**2 + a1*z + a2 (one root when a2 == 0, none when both are 0)."""
    if a2 == 0.0:
        return () if a1 == 0.0 else (complex(-a1),)
    disc = a1 * a1 - 4 * a2
    root = complex(math.sqrt(disc)) if disc >= 0 else complex(0.0, math.sqrt(-disc))
    return (complex((-a1 + root) / 2), complex((-a1 - root) / 2))


def _geometric(base: complex | float, count: int) -> np.ndarray:
    """``base**n`` for n in [0, count), as ``exp(n * log(base))`` on real numbers: relative error
    about ``n * |log base|`` ulps, small for the poles near 1 that need long blocks, and 20x
    quicker than np.power on complex numbers."""
    n = np.arange(count, dtype=np.float64)
    mag = np.exp(n * math.log(abs(base)))
    if isinstance(base, complex):
        angle = n * math.atan2(base.imag, base.real)
        out = np.empty(count, dtype=np.complex128)
        np.multiply(mag, np.cos(angle), out=out.real)
        np.multiply(mag, np.sin(angle), out=out.imag)
        return out
    if base < 0:
        mag[1::2] *= -1.0
    return mag


@functools.lru_cache(maxsize=64)
def _powers(p: complex, block: int, gain: complex) -> tuple[np.ndarray, np.ndarray]:
    """``gain * p**-n`` and ``p**n`` for n in [0, block] (real when ``p`` and ``gain`` are)."""
    real = p.imag == 0.0 and gain.imag == 0.0
    base: complex | float = p.real if real else complex(p)
    g: complex | float = gain.real if real else complex(gain)
    up, down = _geometric(1 / base, block + 1), _geometric(base, block + 1)
    up *= g
    up.setflags(write=False)
    down.setflags(write=False)
    return up, down


def _pow2_at_most(v: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(v, 1.0)))))


def _recursion(x: np.ndarray, p: complex, gain: complex, impulse: np.ndarray | None, work: np.ndarray) -> np.ndarray:
    """``w[n] = gain*x[n] + p*w[n-1]`` along the last axis from rest, plus ``impulse`` (one value
    per row) added to the input at n = 0; |p| < 1. Computed in ``work`` (complex for a complex
    pole, else real; its length a power of two, at least that of ``x``); returns its first
    ``len(x)`` samples.

    Blocks of ``b`` samples, each solved in closed form: ``w = p**n * cumsum(gain * x * p**-n)``.
    Block ``k`` starts from the end of block ``k-1``, which is carried in as ``p * end`` added to
    its first input: the ends come from the block sums before any cumsum, so every step runs in
    place in ``work`` (fresh large arrays cost page faults: as much as the arithmetic here).
    """
    mag = abs(p)
    if mag >= 1.0:
        raise ValueError("unstable filter: a pole on or outside the unit circle")
    n, size = x.shape[-1], work.shape[-1]
    block = min(size, _pow2_at_most(_MAX_GROWTH_LN / -math.log(mag)) if mag > 0 else 1)
    count = size // block
    if x is not work:
        np.copyto(work[..., :n], x)
    work[..., n:] = 0
    up, down = _powers(p, block, complex(gain))
    wb = work.reshape(*work.shape[:-1], count, block)
    wb *= up[:block]
    if impulse is not None:
        wb[..., 0, 0] += impulse
    if count > 1:
        ends = wb.sum(axis=-1) * down[block - 1]  # each block's end value from rest
        step = complex(p**block) if p.imag else p.real**block
        if abs(step) > 1e-30:  # an end still reaches the end of the next block: chain them
            for k in range(1, count):
                ends[..., k] += step * ends[..., k - 1]
        wb[..., 1:, 0] += ends[..., :-1] * down[1]
    np.cumsum(wb, axis=-1, out=wb)
    wb *= down[:block]
    return work[..., :n]


class _Work:
    """Scratch rows reused by every section and chunk of one ``sosfilt`` call."""

    def __init__(self, lead: tuple[int, ...], n: int) -> None:
        size = 1 << max(0, (n - 1).bit_length())
        self.c = np.empty((*lead, size), dtype=np.complex128)
        self.r = np.empty((*lead, size))
        self.r2 = np.empty((*lead, size))


def _section(x: np.ndarray, sec: np.ndarray, state: np.ndarray, out: np.ndarray, work: _Work) -> np.ndarray:
    """One section ``[b0 b1 b2 a0 a1 a2]`` (transposed direct form II semantics) over the last
    axis of float64 ``x`` from ``state`` (``(..., 2)``), written into ``out``; returns the final
    state.

    Split into partial fractions, ``H = k0 + sum r_i / (1 - p_i/z)``: each pole is one recursion
    on the input itself, and a resonant pair (p, conj p) is a single complex one whose real part
    is taken twice. The state is the response of the all-pole part to two extra input samples
    ``[z0, z1]``, ``sum A_i (z0 + z1/p_i) p_i**n`` with ``A_i`` the all-pole residues: an impulse
    into each recursion. Double (or nearly double) poles run the numerator, then the poles in
    cascade.
    """
    b0, b1, b2, a0, a1, a2 = (float(c) for c in sec)
    if a0 != 1.0:
        b0, b1, b2, a1, a2 = b0 / a0, b1 / a0, b2 / a0, a1 / a0, a2 / a0
    n = x.shape[-1]
    s0, s1 = state[..., 0], state[..., 1]
    poles = _poles(a1, a2)
    if len(poles) == 2 and abs(poles[0] - poles[1]) > 1e-3 * abs(poles[0]):
        p, q = poles

        def residue(p: complex, q: complex) -> tuple[complex, complex]:
            """(residue of H, residue of the all-pole part) at p."""
            return (b0 + b1 / p + b2 / (p * p)) / (1 - q / p), p / (p - q)

        (rp, ap), (rq, aq) = residue(p, q), residue(q, p)
        np.multiply(x, b2 / a2, out=out)
        if p.imag != 0.0:  # a resonant pair: the two terms are conjugates for a real input
            out += _recursion(x, p, 2 * rp, 2 * ap * (s0 + s1 / p), work.c).real
        else:
            out += _recursion(x, p.real, rp.real, (ap * (s0 + s1 / p)).real, work.r)
            out += _recursion(x, q.real, rq.real, (aq * (s0 + s1 / q)).real, work.r)
    elif len(poles) == 1 and b2 == 0.0:  # first order: H = -b1/p + (b0 + b1/p) / (1 - p/z)
        p = poles[0].real
        np.multiply(x, -b1 / p, out=out)
        # the state [z0, z1] answers z0 p**n + z1 p**(n-1) (n >= 1): an impulse z0 + z1/p, less z1/p at n = 0
        out += _recursion(x, p, b0 + b1 / p, s0 + s1 / p, work.r)
        out[..., 0] -= s1 / p
    else:
        v = work.r2[..., :n]
        np.multiply(x, b0, out=v)
        for lag, coef in ((1, b1), (2, b2)):
            if n > lag and coef:
                np.multiply(x[..., :-lag], coef, out=work.r[..., : n - lag])
                v[..., lag:] += work.r[..., : n - lag]
        v[..., 0] += s0
        if n > 1:
            v[..., 1] += s1
        for p in poles:
            if p.imag:
                v = _recursion(v, p, 1.0, None, work.c)
            else:
                v = _recursion(v, p.real, 1.0, None, work.r if v.base is not work.r else work.r2)
        np.copyto(out, v.real)
    # final state, from the last two inputs and outputs (the state itself when they are missing)
    x1, y1 = x[..., -1], out[..., -1]
    x2 = x[..., -2] if n > 1 else np.zeros_like(x1)
    y2 = out[..., -2] if n > 1 else np.zeros_like(y1)
    carried = s1 if n == 1 else 0.0
    z0 = b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2 + carried
    z1 = b2 * x1 - a2 * y1
    return np.stack([z0, z1], axis=-1)


def sosfilt(sos: np.ndarray, x: np.ndarray, zi: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cascade of second-order sections along the last axis (``scipy.signal.sosfilt``).

    ``zi``: initial states, shape ``(n_sections, *x.shape[:-1], 2)`` (zero when None).
    Returns the float64 output and the final states (same shape as ``zi``).
    """
    sos = np.atleast_2d(np.asarray(sos, dtype=np.float64))
    if sos.shape[1] != 6:
        raise ValueError("sos must have shape (n_sections, 6)")
    x = np.asarray(x, dtype=np.float64)
    lead = x.shape[:-1]
    states = np.zeros((len(sos), *lead, 2)) if zi is None else np.array(zi, dtype=np.float64)
    if states.shape != (len(sos), *lead, 2):
        raise ValueError(f"zi must have shape {(len(sos), *lead, 2)}")
    n = x.shape[-1]
    out = np.empty_like(x)
    if n == 0:
        return out, states
    work = _Work(lead, min(n, _CHUNK))
    between = np.empty((*lead, min(n, _CHUNK)))
    for start in range(0, n, _CHUNK):  # chunks carry their states: memory stays bounded
        stop = min(start + _CHUNK, n)
        if stop - start < work.c.shape[-1] // 2:
            work = _Work(lead, stop - start)
        src = x[..., start:stop]
        for i, sec in enumerate(sos):
            # the last section writes the output; the ones before alternate between the output
            # and a scratch row, so no section reads what it writes
            last = (len(sos) - 1 - i) % 2 == 0
            dst = out[..., start:stop] if last else between[..., : stop - start]
            states[i] = _section(src, sec, states[i], dst, work)
            src = dst
    return out, states


def sosfilt_zi(sos: np.ndarray) -> np.ndarray:
    """Initial states ``(n_sections, 2)`` for which a step of height 1 passes in steady state
    (``scipy.signal.sosfilt_zi``)."""
    sos = np.atleast_2d(np.asarray(sos, dtype=np.float64))
    zi = np.empty((len(sos), 2))
    scale = 1.0
    for i, (b0, b1, b2, a0, a1, a2) in enumerate(sos):
        b0, b1, b2, a1, a2 = b0 / a0, b1 / a0, b2 / a0, a1 / a0, a2 / a0
        # steady state of s = A s + B with A = [[-a1, 1], [-a2, 0]], B = [b1 - a1 b0, b2 - a2 b0]
        z0 = (b1 + b2 - (a1 + a2) * b0) / (1 + a1 + a2)
        zi[i] = scale * np.array([z0, b2 - a2 * b0 - a2 * z0])
        scale *= (b0 + b1 + b2) / (1 + a1 + a2)
    return zi


def sosfiltfilt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Zero-phase filtering along the last axis: forwards, then backwards, after an odd
    extension of ``3 * (2 * n_sections + 1)`` samples at each end and steady-state initial
    states (``scipy.signal.sosfiltfilt`` with its defaults). float64 out."""
    sos = np.atleast_2d(np.asarray(sos, dtype=np.float64))
    x = np.asarray(x, dtype=np.float64)
    taps = 2 * len(sos) + 1 - min(int(np.sum(sos[:, 2] == 0)), int(np.sum(sos[:, 5] == 0)))
    edge = 3 * taps
    if x.shape[-1] <= edge:
        raise ValueError(f"sosfiltfilt needs more than {edge} samples")
    first, last = x[..., :1], x[..., -1:]
    ext = np.concatenate(
        [2 * first - x[..., edge:0:-1], x, 2 * last - x[..., -2 : -edge - 2 : -1]], axis=-1
    )
    zi = sosfilt_zi(sos).reshape(len(sos), *([1] * (x.ndim - 1)), 2)
    y, _ = sosfilt(sos, ext, zi * ext[np.newaxis, ..., 0, np.newaxis])
    y = y[..., ::-1]
    y, _ = sosfilt(sos, y, zi * y[np.newaxis, ..., 0, np.newaxis])
    return np.ascontiguousarray(y[..., ::-1][..., edge:-edge])


# --------------------------------------------------------------------------- moving windows


def moving_max(a: np.ndarray, size: int) -> np.ndarray:
    """Centred moving maximum along the last axis, edges repeated
    (``scipy.ndimage.maximum_filter1d(a, size, mode="nearest")``), in O(n) whatever the size
    (van Herk / Gil-Werman: prefix maxima forwards and backwards within blocks of ``size``)."""
    if size < 1:
        raise ValueError("size must be >= 1")
    a = np.asarray(a)
    n = a.shape[-1]
    if size == 1 or n == 0:
        return a.copy()
    half = size // 2
    count = -(-(n + size - 1) // size)
    total = count * size
    padded = np.pad(a, [(0, 0)] * (a.ndim - 1) + [(half, total - n - half)], mode="edge")
    blocks = padded.reshape(*a.shape[:-1], count, size)
    forward = np.maximum.accumulate(blocks, axis=-1).reshape(*a.shape[:-1], total)
    backward = np.maximum.accumulate(blocks[..., ::-1], axis=-1)[..., ::-1].reshape(*a.shape[:-1], total)
    return np.maximum(backward[..., :n], forward[..., size - 1 : size - 1 + n])


def moving_mean(a: np.ndarray, size: int) -> np.ndarray:
    """Centred moving mean along the last axis, edges repeated
    (``scipy.ndimage.uniform_filter1d(a, size, mode="nearest")``), float64."""
    if size < 1:
        raise ValueError("size must be >= 1")
    a = np.asarray(a, dtype=np.float64)
    half = size // 2
    padded = np.pad(a, [(0, 0)] * (a.ndim - 1) + [(half, size - 1 - half)], mode="edge")
    c = np.cumsum(padded, axis=-1)
    c = np.concatenate([np.zeros((*a.shape[:-1], 1)), c], axis=-1)
    return (c[..., size:] - c[..., :-size]) / size
