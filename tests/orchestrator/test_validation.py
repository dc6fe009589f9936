"""The orchestrator's request checks: the stream's shape (the shared config-first rule) and the
limits it shares with the services it passes fields on to."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from pydantic import ValidationError

from parole.orchestrator.v1 import orchestrator_pb2 as pb
from services.orchestrator import validation
from services.orchestrator.config import ConversationDefaults, OrchestratorSettings
from services.orchestrator.session import SessionSettings
from services.runtime.errors import InvalidArgument
from services.stt import validation as stt_validation
from services.stt.config import StreamingSettings
from tests.e2e.driver import config
from tests.orchestrator.conftest import Harness

WAIT = 15.0


async def refusal(harness: Harness, requests: list[pb.ConverseRequest]) -> grpc.aio.AioRpcError:
    """The status a Converse stream of exactly ``requests`` (then half-closed) ends with."""

    async def sent() -> AsyncIterator[pb.ConverseRequest]:
        for request in requests:
            yield request

    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in harness.stub.Converse(sent(), timeout=WAIT):
            pass
    return err.value


async def test_the_stream_opens_with_its_config_once(harness: Harness) -> None:
    opening = pb.ConverseRequest(config=config())
    audio_first = await refusal(harness, [pb.ConverseRequest(audio=b"\x00\x00")])
    assert audio_first.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "the first message of Converse must carry `config`; `audio` came first" in (audio_first.details() or "")
    again = await refusal(harness, [opening, opening])
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "`config` may only be sent once, in the first message of Converse" in (again.details() or "")
    empty_message = await refusal(harness, [opening, pb.ConverseRequest()])
    assert empty_message.code() == grpc.StatusCode.INVALID_ARGUMENT
    nothing = await refusal(harness, [])
    assert nothing.code() == grpc.StatusCode.INVALID_ARGUMENT  # no config at all: as before the shared check


def test_the_end_of_speech_silence_is_the_stts_own_limit() -> None:
    """Passed to the STT as is: every value it applies is accepted here, and nothing else."""
    assert validation.EOS_SILENCE is stt_validation.EOS_SILENCE
    low, high = int(stt_validation.EOS_SILENCE.low), int(stt_validation.EOS_SILENCE.high)
    for ms in (low, high):
        s = SessionSettings.from_config(pb.SessionConfig(end_of_speech_silence_ms=ms), OrchestratorSettings())
        assert s.end_of_speech_silence_ms == ms
    for ms in (low - 1, high + 1):
        with pytest.raises(InvalidArgument) as err:
            SessionSettings.from_config(pb.SessionConfig(end_of_speech_silence_ms=ms), OrchestratorSettings())
        assert "config.end_of_speech_silence_ms" in err.value.fields
    # The server defaults of both services are held to the same range.
    assert ConversationDefaults(end_of_speech_silence_ms=low).end_of_speech_silence_ms == low
    with pytest.raises(ValidationError):
        ConversationDefaults(end_of_speech_silence_ms=low - 1)
    with pytest.raises(ValidationError):
        StreamingSettings(end_of_speech_silence_ms=low - 1)
    with pytest.raises(ValidationError):
        ConversationDefaults(feedback_tail_ms=int(validation.FEEDBACK_TAIL.high) + 1)


def test_a_session_id_the_llm_would_refuse_is_refused_at_once() -> None:
    """The id names the LLM's session: checked by its rule (a trailing newline once passed
    here and then failed every turn there)."""
    with pytest.raises(InvalidArgument) as err:
        SessionSettings.from_config(pb.SessionConfig(session_id="abc\n"), OrchestratorSettings())
    assert "config.session_id" in err.value.fields
