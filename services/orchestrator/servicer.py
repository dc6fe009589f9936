"""gRPC side of the orchestrator: admission and hand-off to the conversation (session.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from parole.orchestrator.v1 import orchestrator_pb2 as pb
from parole.orchestrator.v1 import orchestrator_pb2_grpc
from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.guard import Stubs
from services.orchestrator.session import converse
from services.runtime.errors import ResourceExhausted


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """Converse: one bidirectional stream per conversation."""

    def __init__(self, stubs: Stubs, settings: OrchestratorSettings) -> None:
        self.stubs = stubs
        self.settings = settings
        self.active = 0

    async def Converse(
        self, request_iterator: AsyncIterator[pb.ConverseRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ConverseResponse]:
        if self.active >= self.settings.max_sessions:
            raise ResourceExhausted(
                f"{self.active} conversations are in progress, the most this orchestrator holds "
                f"(ORCH_MAX_SESSIONS={self.settings.max_sessions}); retry later or add a replica"
            )
        self.active += 1
        try:
            async for msg in converse(self.stubs, self.settings, request_iterator):
                yield msg
        finally:
            self.active -= 1
