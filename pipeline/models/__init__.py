"""Model files shipped with voiceprep (``split_silero`` and ``make_voice_encoder`` make them from published models)."""

from pathlib import Path

_HERE = Path(__file__).resolve().parent
SILERO_ENCODER = _HERE / "silero_vad_16k_encoder.onnx"
SILERO_DECODER = _HERE / "silero_vad_16k_decoder.onnx"
VOICE_ENCODER = _HERE / "voice_encoder_ge2e.fp16.onnx"
VOICE_ENCODER_LICENSE = _HERE / "LICENSE-resemblyzer.txt"
