"""The session's endpointing choice reaches speech-to-text unchanged."""

from __future__ import annotations

import asyncio

import pytest

from parole.orchestrator.v1 import orchestrator_pb2 as pb
from parole.stt.v1 import stt_pb2
from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.session import SessionSettings
from services.runtime.errors import InvalidArgument
from tests.orchestrator.conftest import Harness


@pytest.mark.parametrize(
    "mode",
    [stt_pb2.ENDPOINTING_MODE_UNSPECIFIED, stt_pb2.ENDPOINTING_MODE_SEMANTIC, stt_pb2.ENDPOINTING_MODE_SILENCE],
)
async def test_endpointing_is_passed_to_speech_to_text(
    harness: Harness, mode: stt_pb2.EndpointingMode.ValueType
) -> None:
    stt = harness.fakes.stt
    s = harness.session(endpointing=mode)
    async with asyncio.timeout(15):
        await stt.connected.wait()  # the (fake) STT service has the stream's config
    assert stt.configs[0].endpointing == mode
    assert stt.configs[0].end_of_speech_silence_ms == OrchestratorSettings().defaults.end_of_speech_silence_ms
    await s.close(timeout=15)


def test_an_unknown_endpointing_mode_is_refused() -> None:
    with pytest.raises(InvalidArgument) as err:
        SessionSettings.from_config(pb.SessionConfig(endpointing=9), OrchestratorSettings())  # type: ignore[arg-type]
    assert "config.endpointing" in err.value.fields
