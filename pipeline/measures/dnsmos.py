"""DNSMOS P.835 scores through the optional ``dnsmos`` extra (speechmos)."""

from __future__ import annotations

import numpy as np

from .frames import ANALYSIS_RATE


def dnsmos(x16: np.ndarray) -> dict[str, float]:
    """DNSMOS P.835 scores (1-5) from the ONNX models shipped in ``speechmos`` (extra ``dnsmos``).

    Imported only when asked for: it pulls in librosa (about 1 s to import cold).
    """
    try:
        from speechmos import dnsmos as _dnsmos
    except ImportError as exc:  # the optional extra is missing
        raise RuntimeError("DNSMOS needs the optional extra: pip install 'voiceprep[dnsmos]'") from exc
    out = _dnsmos.run(np.asarray(x16, dtype=np.float32), ANALYSIS_RATE)
    return {f"dnsmos_{k.removesuffix('_mos')}": round(float(v), 2) for k, v in out.items() if k.endswith("_mos")}
