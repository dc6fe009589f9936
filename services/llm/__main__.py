"""``python -m services.llm``: the LLM service (gRPC 50052, metrics 9092 by default)."""

from __future__ import annotations

import sys

from services.llm.app import build
from services.llm.config import LlmSettings
from services.runtime.cli import service_main

if __name__ == "__main__":
    sys.exit(service_main("llm", LlmSettings, build))
