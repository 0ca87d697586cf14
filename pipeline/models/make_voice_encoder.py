"""Build the voice encoder voiceprep ships, from Resemblyzer's checkpoint in its PyPI wheel.

    python -m pipeline.models.make_voice_encoder [--wheel PATH]   # needs the dev extra (onnx)

Resemblyzer 0.1.4 (Apache-2.0, Resemble AI) ships ``resemblyzer/pretrained.pt``: a GE2E voice
encoder (three LSTM layers of 256 units over 40 linear-power mel bands, a linear layer, ReLU and
L2 normalisation) saved in torch's legacy (pre-zip) pickle format. This script

* takes the wheel (``--wheel``, else ``pip download --no-deps resemblyzer==0.1.4`` into the pip
  cache folder given by ``VOICEPREP_WHEELS`` or a temporary one) and checks its sha256;
* reads the checkpoint with an unpickler that allows only tensor rebuilds, storage types and
  ``OrderedDict``: no code from the file runs and torch is not needed;
* writes the network as one ONNX graph (opset 14): ``mels (batch, frames, 40)`` -> 3 x LSTM ->
  last hidden state -> Gemm -> Relu -> LpNormalization -> ``embeddings (batch, 256)``, its weights
  stored as float16 and cast to float32 once when a session loads them;
* copies the wheel's licence beside it.

The build is deterministic; tests/test_voice_encoder.py holds the shipped file to it.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.models import VOICE_ENCODER, VOICE_ENCODER_LICENSE

WHEEL = "Resemblyzer-0.1.4-py3-none-any.whl"
REQUIREMENT = "resemblyzer==0.1.4"
WHEEL_SHA256 = "8f12eb2f1a9982d32e8db7856de754709b59c93a77bcf0ff536584b619a9dd1f"
CHECKPOINT = "resemblyzer/pretrained.pt"
LICENSE = "Resemblyzer-0.1.4.dist-info/LICENSE"
LAYERS = 3
HIDDEN = 256
_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "LongStorage": np.int64, "IntStorage": np.int32}


class _Storage:
    def __init__(self, dtype: Any, size: int) -> None:
        self.dtype, self.size = dtype, size
        self.data: np.ndarray = np.zeros(0, dtype=dtype)


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def numpy(self) -> np.ndarray:
        a = self.storage.data
        view = np.lib.stride_tricks.as_strided(a[self.offset :], self.size, [s * a.itemsize for s in self.stride])
        return np.array(view, copy=True)


def _rebuild(storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any) -> _Tensor:
    return _Tensor(storage, offset, size, stride)


class _LegacyUnpickler(pickle.Unpickler):
    """Torch's legacy checkpoint format as plain objects: only tensor rebuilds, storage types and
    ``OrderedDict`` are allowed, anything else is refused."""

    def __init__(self, f: Any) -> None:
        super().__init__(f)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name.startswith("_rebuild_tensor"):
            return _rebuild
        if module == "torch" and name in _DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"make_voice_encoder: unexpected class {module}.{name} in the checkpoint")

    def persistent_load(self, pid: Any) -> _Storage:
        _, stype, key, _, size, _ = pid
        if key not in self.storages:
            self.storages[key] = _Storage(_DTYPES[stype], size)
        return self.storages[key]


def read_checkpoint(data: bytes) -> dict[str, np.ndarray]:
    """The ``model_state`` tensors of a legacy torch checkpoint, as float32 arrays (the optimizer
    state is dropped)."""
    f = io.BytesIO(data)
    for _ in range(3):  # magic number, protocol version, system info
        pickle.load(f)  # noqa: S301 - plain ints and dicts; the object pickle goes through _LegacyUnpickler
    u = _LegacyUnpickler(f)
    obj = u.load()
    for key in pickle.load(f):  # noqa: S301 - a list of storage keys
        st = u.storages[key]
        (n,) = struct.unpack("<q", f.read(8))
        st.data = np.frombuffer(f.read(n * np.dtype(st.dtype).itemsize), dtype=st.dtype)
    return {k: v.numpy().astype(np.float32) for k, v in obj["model_state"].items() if isinstance(v, _Tensor)}


def _gates(w: np.ndarray) -> np.ndarray:
    """PyTorch's gate order (input, forget, cell, output) to ONNX's (input, output, forget, cell)."""
    i, f, g, o = np.split(w, 4, axis=0)
    return np.concatenate([i, o, f, g], axis=0)


def build_onnx(state: dict[str, np.ndarray]) -> Any:
    """The ONNX model: ``mels (batch, frames, 40)`` linear-power mel -> ``embeddings (batch, 256)``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights: dict[str, np.ndarray] = {}
    nodes = [helper.make_node("Transpose", ["mels"], ["x0"], perm=[1, 0, 2])]  # (frames, batch, 40)
    x = "x0"
    for layer in range(LAYERS):
        weights[f"W{layer}"] = _gates(state[f"lstm.weight_ih_l{layer}"])[None]
        weights[f"R{layer}"] = _gates(state[f"lstm.weight_hh_l{layer}"])[None]
        weights[f"B{layer}"] = np.concatenate(
            [_gates(state[f"lstm.bias_ih_l{layer}"]), _gates(state[f"lstm.bias_hh_l{layer}"])]
        )[None]
        ins = [x, f"W{layer}", f"R{layer}", f"B{layer}"]
        nodes.append(helper.make_node("LSTM", ins, [f"y{layer}", f"h{layer}"], hidden_size=HIDDEN))
        if layer < LAYERS - 1:
            nodes.append(helper.make_node("Squeeze", [f"y{layer}", "axis1"], [f"x{layer + 1}"]))
            x = f"x{layer + 1}"
    weights["Wl"], weights["bl"] = state["linear.weight"], state["linear.bias"]
    nodes += [
        helper.make_node("Squeeze", [f"h{LAYERS - 1}", "axis0"], ["h"]),  # (batch, hidden)
        helper.make_node("Gemm", ["h", "Wl", "bl"], ["lin"], transB=1),
        helper.make_node("Relu", ["lin"], ["raw"]),
        helper.make_node("LpNormalization", ["raw"], ["embeddings"], axis=1, p=2),
    ]
    # float16 storage (half the file; the embeddings move by under 1e-4 in cosine), cast once at load
    casts = [helper.make_node("Cast", [f"{k}_h"], [k], to=TensorProto.FLOAT) for k in weights]
    inits = [numpy_helper.from_array(v.astype(np.float16), f"{k}_h") for k, v in weights.items()]
    inits += [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"),
    ]
    graph = helper.make_graph(
        casts + nodes,
        "voice_encoder_ge2e",
        [helper.make_tensor_value_info("mels", TensorProto.FLOAT, ["batch", "frames", 40])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", HIDDEN])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], producer_name="voiceprep")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def wheel_folder() -> Path:
    """Where the wheel is looked for and downloaded to: ``VOICEPREP_WHEELS`` or ~/.cache/voiceprep."""
    return Path(os.environ.get("VOICEPREP_WHEELS") or Path.home() / ".cache" / "voiceprep")


def fetch_wheel(folder: Path | None = None, *, timeout_s: float = 120.0) -> Path:
    """The Resemblyzer wheel: found in ``folder`` or fetched there with ``pip download --no-deps``.
    Raises OSError when it cannot be had (offline)."""
    folder = folder or wheel_folder()
    path = folder / WHEEL
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "--timeout", "15", "--retries", "1"]
        cmd += ["-d", str(folder), REQUIREMENT]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=timeout_s)  # noqa: S603
        except (subprocess.SubprocessError, OSError) as exc:
            raise OSError(f"make_voice_encoder: cannot download {REQUIREMENT}: {exc}") from exc
    if not path.exists():
        raise OSError(f"make_voice_encoder: {path} missing after pip download")
    return path


def read_wheel(wheel: Path) -> tuple[dict[str, np.ndarray], bytes]:
    """The checkpoint's weights and the licence text of the wheel at ``wheel`` (sha256 checked)."""
    data = wheel.read_bytes()
    if hashlib.sha256(data).hexdigest() != WHEEL_SHA256:
        raise SystemExit(f"make_voice_encoder: {wheel} is not the {REQUIREMENT} wheel this build was checked against")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return read_checkpoint(z.read(CHECKPOINT)), z.read(LICENSE)


def build(wheel: Path) -> tuple[bytes, bytes]:
    """The serialised model and the licence text, from the wheel at ``wheel``."""
    state, licence = read_wheel(wheel)
    return build_onnx(state).SerializeToString(), licence


def _write(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as f:
        f.write(data)
    os.chmod(f.name, 0o644)
    Path(f.name).replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", type=Path, help=f"the {WHEEL} (downloaded with pip when omitted)")
    a = ap.parse_args(argv)
    model, licence = build(a.wheel or fetch_wheel())
    _write(VOICE_ENCODER, model)
    _write(VOICE_ENCODER_LICENSE, licence)
    print(f"{VOICE_ENCODER.name}: {len(model)} bytes, sha256 {hashlib.sha256(model).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
