"""Model files shipped with voiceprep (see ``split_silero`` for how they are made)."""
