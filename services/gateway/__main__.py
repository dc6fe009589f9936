"""``python -m services.gateway``: OpenAI-compatible HTTP/Realtime API on 8000, Wyoming ASR on
10300 and TTS on 10200, gRPC health on 50054, metrics on 9094."""

from __future__ import annotations

import sys

from services.gateway.app import build
from services.gateway.config import GatewaySettings
from services.runtime.cli import service_main

if __name__ == "__main__":
    sys.exit(service_main("gateway", GatewaySettings, build))
