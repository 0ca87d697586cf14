"""Signal measures as pure functions that stages call: loudness, noise, spectrum, voices, music, summary."""
