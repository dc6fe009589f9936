"""``python -m services.orchestrator``: the conversation service (default port 50050)."""

import sys

from services.orchestrator.app import OrchestratorApp
from services.orchestrator.config import OrchestratorSettings
from services.runtime.cli import service_main

if __name__ == "__main__":
    sys.exit(service_main("orchestrator", OrchestratorSettings, OrchestratorApp))
