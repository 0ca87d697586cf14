"""pipeline/models: the shipped voice encoder against what make_voice_encoder builds from the
Resemblyzer wheel, and its graph against the LSTM equations in plain numpy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import quality_signals as qs
from onnx import numpy_helper

from pipeline import speech
from pipeline.measures import voices
from pipeline.models import VOICE_ENCODER, VOICE_ENCODER_LICENSE, make_voice_encoder

R = 16000


def test_shipped_file_is_what_the_script_builds():
    """Compared as parsed models; needs the pinned wheel (pip cache folder or PyPI), else skipped."""
    try:
        wheel = make_voice_encoder.fetch_wheel()
    except OSError as exc:
        pytest.skip(f"the Resemblyzer wheel cannot be had here: {exc}")
    model, licence = make_voice_encoder.build(wheel)
    assert onnx.load_from_string(model) == onnx.load(str(VOICE_ENCODER))
    assert licence == VOICE_ENCODER_LICENSE.read_bytes()
    # float16 storage: every embedding within 1e-4 in cosine of the checkpoint's float32 weights
    state, _ = make_voice_encoder.read_wheel(wheel)
    x, segs = qs.reader()
    chunks = voices.speech_chunks(x, segs).mels[:6]
    full = {f"{k}_h": v for k, v in _float32_weights(state).items()}
    cos = np.sum(voices.embed(chunks) * _numpy_encoder(chunks, full), axis=1)
    assert np.min(cos) > 1 - 1e-4


def _float32_weights(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The checkpoint's weights under the names and gate order of the shipped graph."""
    g = make_voice_encoder._gates
    out = {"Wl": state["linear.weight"], "bl": state["linear.bias"]}
    for layer in range(3):
        out[f"W{layer}"] = g(state[f"lstm.weight_ih_l{layer}"])[None]
        out[f"R{layer}"] = g(state[f"lstm.weight_hh_l{layer}"])[None]
        out[f"B{layer}"] = np.concatenate([g(state[f"lstm.bias_ih_l{layer}"]), g(state[f"lstm.bias_hh_l{layer}"])])[None]
    return out


def test_a_wheel_with_another_hash_is_refused(tmp_path):
    fake = tmp_path / make_voice_encoder.WHEEL
    fake.write_bytes(b"not the wheel")
    with pytest.raises(SystemExit, match=r"not the resemblyzer==0\.1\.4 wheel"):
        make_voice_encoder.build(fake)


def test_the_checkpoint_reader_runs_no_code():
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    data = b"".join(pickle.dumps(v) for v in (1, 1001, {})) + pickle.dumps(Evil())
    with pytest.raises(pickle.UnpicklingError, match="unexpected class"):
        make_voice_encoder.read_checkpoint(data)


def _numpy_encoder(mels: np.ndarray, weights: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The shipped weights (or ``weights``, same names) through the LSTM equations (ONNX gate
    order i, o, f, c) in float64."""
    if weights is None:
        weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(VOICE_ENCODER)).graph.initializer}
    w = {k[:-2]: np.asarray(v, dtype=np.float64) for k, v in weights.items() if k.endswith("_h")}

    def sig(v: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-v))

    x = mels.astype(np.float64)
    h = np.zeros((len(x), 256))
    for layer in range(3):
        wi, wh, b = w[f"W{layer}"][0], w[f"R{layer}"][0], w[f"B{layer}"][0]
        h, c = np.zeros((len(x), 256)), np.zeros((len(x), 256))
        pre = x @ wi.T + b[:1024] + b[1024:]
        ys = np.empty((len(x), x.shape[1], 256))
        for t in range(x.shape[1]):
            i, o, f, g = np.split(pre[:, t] + h @ wh.T, 4, axis=1)
            c = sig(f) * c + sig(i) * np.tanh(g)
            h = sig(o) * np.tanh(c)
            ys[:, t] = h
        x = ys
    raw = np.maximum(h @ w["Wl"].T + w["bl"], 0.0)
    return raw / np.linalg.norm(raw, axis=1, keepdims=True)


def test_the_graph_computes_the_lstm_it_claims():
    x, segs = qs.reader()
    chunks = voices.speech_chunks(x, segs).mels[:4]
    ours = voices.embed(chunks)
    assert ours.shape == (4, 256)
    assert np.max(np.abs(ours - _numpy_encoder(chunks))) < 1e-5  # float32 against float64 sums


def test_one_reader_reads_as_one_voice_and_two_as_two():
    x, segs = qs.reader()
    one = voices.voice_evidence(x, segs)
    assert one.distance is not None and one.distance < 0.2 and one.chunks == voices.MAX_CHUNKS
    awb, slt = qs.load("speech_arctic_awb_16k.wav"), qs.load("speech_arctic_slt_16k.wav")
    two = np.concatenate([awb, slt])
    ev = voices.voice_evidence(two, speech.detect(two, R).segments)
    assert ev.distance is not None and ev.distance > 0.3
    assert min(ev.group_s) > 1.5  # both voices hold a share


def test_too_little_speech_gives_no_value_and_long_speech_is_capped():
    slt = qs.load("speech_arctic_slt_16k.wav")
    assert voices.voice_evidence(slt, speech.detect(slt, R).segments).distance is None
    al = qs.load("speech_allison_8k.flac")[: 60 * R]
    ev = voices.voice_evidence(al, speech.detect(al, R).segments)
    assert ev.chunks == voices.MAX_CHUNKS == 20 and ev.distance is not None and ev.distance < 0.2
