"""gRPC side of the orchestrator: admission and hand-off to the conversation (session.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from parole.orchestrator.v1 import orchestrator_pb2 as pb
from parole.orchestrator.v1 import orchestrator_pb2_grpc
from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.guard import Stubs
from services.orchestrator.metrics import REFUSED_SESSIONS
from services.orchestrator.session import converse
from services.runtime.errors import ResourceExhausted


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """Converse: one bidirectional stream per conversation."""

    def __init__(self, stubs: Stubs, settings: OrchestratorSettings) -> None:
        self.stubs = stubs
        self.settings = settings

    async def Converse(
        self, request_iterator: AsyncIterator[pb.ConverseRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ConverseResponse]:
        admission = self.stubs.admission
        if admission.sessions >= self.settings.max_sessions:
            REFUSED_SESSIONS.labels("max_sessions").inc()
            raise ResourceExhausted(
                f"{admission.sessions} conversations are in progress, the most this orchestrator holds "
                f"(ORCH_MAX_SESSIONS={self.settings.max_sessions}); retry later or add a replica",
                retry_after=max(admission.service_seconds, 1.0),
            )
        if admission.saturated:
            # Its first turn would be declined: better a clear refusal now, which a client or a
            # load balancer can retry elsewhere, than a conversation that cannot be answered.
            REFUSED_SESSIONS.labels("saturated").inc()
            wait = admission.expected_wait()
            raise ResourceExhausted(
                f"the language model is busy with other conversations: a new turn would wait about {wait:.0f} s, "
                f"past ORCH_GIVE_UP_SECONDS={admission.give_up_after:g}; retry in {wait:.0f} s or use "
                "another replica",
                retry_after=wait,
            )
        # Counted where the answering stages read it too (a machine with another conversation
        # open is shared): one count of the open conversations.
        admission.sessions += 1
        try:
            async for msg in converse(self.stubs, self.settings, request_iterator):
                yield msg
        finally:
            admission.sessions -= 1
