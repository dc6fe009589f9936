"""The session's endpointing choice reaches speech-to-text unchanged."""

from __future__ import annotations

import pytest

from parole.orchestrator.v1 import orchestrator_pb2 as pb
from parole.stt.v1 import stt_pb2
from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.pipeline import Conversation, SessionSettings
from services.runtime.errors import InvalidArgument


@pytest.mark.parametrize(
    "mode",
    [stt_pb2.ENDPOINTING_MODE_UNSPECIFIED, stt_pb2.ENDPOINTING_MODE_SEMANTIC, stt_pb2.ENDPOINTING_MODE_SILENCE],
)
async def test_endpointing_is_passed_to_speech_to_text(mode: stt_pb2.EndpointingMode.ValueType) -> None:
    settings = OrchestratorSettings()
    session = SessionSettings.from_config(pb.SessionConfig(endpointing=mode), settings)
    conv = Conversation(None, settings, session)  # type: ignore[arg-type]
    first = await anext(aiter(conv._stt_requests()))
    assert first.config.endpointing == mode
    assert first.config.end_of_speech_silence_ms == settings.defaults.end_of_speech_silence_ms


def test_an_unknown_endpointing_mode_is_refused() -> None:
    with pytest.raises(InvalidArgument) as err:
        SessionSettings.from_config(pb.SessionConfig(endpointing=9), OrchestratorSettings())  # type: ignore[arg-type]
    assert "config.endpointing" in err.value.fields
