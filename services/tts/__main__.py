"""``python -m services.tts``: the TTS service (gRPC 50053, metrics 9093)."""

from __future__ import annotations

import sys

from services.runtime.cli import service_main
from services.tts.app import build
from services.tts.config import TtsSettings

if __name__ == "__main__":
    sys.exit(service_main("tts", TtsSettings, build))
