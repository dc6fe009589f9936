"""Builds the orchestrator from its settings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import grpc

from parole.llm.v1 import llm_pb2_grpc
from parole.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from parole.stt.v1 import stt_pb2_grpc
from parole.tts.v1 import tts_pb2_grpc
from services.orchestrator.admission import NOTICE, Admission
from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.guard import Stubs
from services.orchestrator.servicer import OrchestratorServicer
from services.orchestrator.stages.speak import WARM_TIMEOUT, Speak
from services.runtime import healthcheck
from services.runtime.channel import open_channel
from services.runtime.logging import get_logger
from services.runtime.resilience import Breakers
from services.runtime.server import RunningServer

log = get_logger(__name__)
SERVICE = orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].full_name


class OrchestratorApp:
    """Channels to the three services and the Converse servicer."""

    name = "orchestrator"

    def __init__(self, settings: OrchestratorSettings) -> None:
        self.settings = settings
        self.channels = {
            "stt": open_channel(settings.stt, settings.server),
            "llm": open_channel(settings.llm, settings.server),
            "tts": open_channel(settings.tts, settings.server),
        }
        self.stubs = Stubs(
            stt=stt_pb2_grpc.SttServiceStub(self.channels["stt"]),
            llm=llm_pb2_grpc.LlmServiceStub(self.channels["llm"]),
            tts=tts_pb2_grpc.TtsServiceStub(self.channels["tts"]),
            breakers=Breakers("orchestrator", settings.breaker_threshold, settings.breaker_ttl_seconds),
            admission=Admission(
                settings.answer_slots,
                notice_after=settings.wait_notice_seconds,
                give_up_after=settings.give_up_seconds,
            ),
        )
        self.servicer = OrchestratorServicer(self.stubs, settings)
        self._running: RunningServer | None = None
        self._health_updates: set[asyncio.Task[None]] = set()

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(self.servicer, server)
        return [SERVICE]

    async def on_serving(self, running: RunningServer) -> None:
        """From now on the service's own health name says whether new conversations are taken:
        NOT_SERVING while saturated (a readiness probe sends them to another replica), while
        "" stays SERVING (the process is alive; liveness must not restart a busy one)."""
        self._running = running
        self.stubs.admission.on_saturation = self.saturation_changed

    def saturation_changed(self, saturated: bool) -> None:
        if self._running is None:
            return
        if saturated:
            log.warning("saturated: new conversations are refused until a new turn's wait is back within budget")
        else:
            log.info("no longer saturated: new conversations are taken again")
        task = asyncio.get_running_loop().create_task(self._running.set_status(SERVICE, not saturated))
        self._health_updates.add(task)  # kept until done (the loop holds tasks weakly)
        task.add_done_callback(self._health_updates.discard)

    async def warm_up(self) -> None:
        """Waits (bounded) for the three services, so the first conversation is not degraded."""
        deadline = time.monotonic() + self.settings.dependency_wait_seconds
        pending = dict(self.channels)
        while pending and time.monotonic() < deadline:
            for name, channel in list(pending.items()):
                try:
                    if await healthcheck.status(channel, deadline=2) == healthcheck.SERVING:
                        del pending[name]
                        log.info("dependency serving", dependency=name)
                except grpc.aio.AioRpcError:
                    pass
            if pending:
                await asyncio.sleep(0.5)
        if pending:
            log.warning("serving without these dependencies; turns will degrade", missing=sorted(pending))
        elif "tts" not in pending:
            await self._cache_notices()

    async def _cache_notices(self) -> None:
        """Has the spoken wait notice of each language's default voice ready now: it is needed
        when the machine is full, when its synthesis would queue behind answers."""
        for language, text in NOTICE.items():
            speak = Speak(
                self.stubs.tts,
                self.stubs.breakers,
                voice=self.settings.defaults.voices.get(language, ""),
                language=language,
                output_rate=0,
                timeout=WARM_TIMEOUT,
                phrases=self.stubs.phrases,
            )
            if await speak.phrase(text, WARM_TIMEOUT) is None:
                log.warning(
                    "the wait notice could not be cached; it will be synthesised when first needed", language=language
                )

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()
