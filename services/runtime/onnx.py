"""onnxruntime session settings every service shares (the options object comes from the
engine, the only module that imports onnxruntime)."""

from __future__ import annotations

from typing import Any

SPINNING = "session.intra_op.allow_spinning"


def sleep_between_operators(options: Any) -> Any:
    """Makes the session's intra-op threads sleep between operators instead of spinning, and
    returns ``options``. The fleet's services share the host's cores, and a spinning thread
    burns the core another service (or another answer's voice) is waiting for. Measured with
    ``python -m bench.spinning`` beside two busy processes on 2 cores (AVX2): Kokoro's first
    piece 1.74 s instead of 2.15 s, Piper's 0.19 s instead of 0.26 s; alone, Kokoro 0.97 s
    against 0.95 s and Piper 0.09 s against 0.12 s, with 10-30 % less CPU."""
    options.add_session_config_entry(SPINNING, "0")
    return options
