"""Model files shipped with voiceprep (``split_silero`` makes them from the published model)."""

from pathlib import Path

SILERO_ENCODER = Path(__file__).resolve().parent / "silero_vad_16k_encoder.onnx"
SILERO_DECODER = Path(__file__).resolve().parent / "silero_vad_16k_decoder.onnx"
