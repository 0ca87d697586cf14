"""The service's published limits on an uploaded recording (shared by the stages that check them)."""

from __future__ import annotations

MAX_FILE_BYTES = 10_000_000  # "10 MB": the decimal reading is the safe one (between 10^7 and 10 MiB may be refused)
MIN_SAMPLE_RATE_HZ = 16000
MAX_DURATION_S = 60.0  # longer audio fails with InternalError ("audio preprocess server error")
MIN_SPEECH_S = 10.0  # speech must total MORE than this
MIN_RUN_S = 5.0  # one continuous speech run must be LONGER than this
