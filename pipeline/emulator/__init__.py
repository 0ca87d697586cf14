"""A local emulator of the CosyVoice enrollment, upload and synthesis service (needs the `emulator` extra)."""
