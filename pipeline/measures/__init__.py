"""Signal measures as pure functions (frames, loudness, noise, spectrum, voices, music, dnsmos, summary) that stages call."""
