"""``python -m services.stt [--config FILE] [--port N]``: the speech-to-text service."""

from __future__ import annotations

import sys

from services.runtime.cli import service_main
from services.stt.app import SttApp
from services.stt.config import SttSettings

if __name__ == "__main__":
    sys.exit(service_main("stt", SttSettings, SttApp.from_settings))
