"""The microphone gate, the audio clock and the session's settings, on their own."""

from __future__ import annotations

import pytest

from parole.audio.v1 import audio_pb2
from parole.orchestrator.v1 import orchestrator_pb2 as pb
from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.gate import AudioClock, MicGate
from services.orchestrator.session import SessionSettings
from services.runtime.errors import InvalidArgument


def test_gate_follows_audio_duration_when_client_never_reports() -> None:
    gate = MicGate(tail=0.3, slack=0.5)
    assert not gate.closed(0.0)
    assert gate.audio_sent("t1", 1.0, now=10.0) is True  # first chunk closes the gate
    assert gate.audio_sent("t1", 2.0, now=10.2) is False
    gate.answer_done("t1")
    # Chunks play back to back: 10.0 + 1.0 + 2.0 = 13.0, plus slack and tail.
    assert gate.opens_at() == pytest.approx(13.8)
    assert gate.closed(13.7) and not gate.closed(13.81)


def test_gate_chunk_arriving_after_the_previous_ended_starts_then() -> None:
    gate = MicGate(tail=0.0, slack=0.0)
    gate.audio_sent("t1", 1.0, now=0.0)
    gate.audio_sent("t1", 1.0, now=5.0)  # a slow answer: silence between the clauses
    gate.answer_done("t1")
    assert gate.opens_at() == pytest.approx(6.0)


def test_gate_stays_closed_while_the_answer_is_produced() -> None:
    # Synthesis fell behind: the audio sent so far has played out long ago, but more of the
    # answer is coming, and it would play into an open microphone.
    gate = MicGate(tail=0.3, slack=0.5)
    gate.audio_sent("t1", 1.0, now=0.0)
    assert gate.closed(100.0) and gate.opens_at() is None
    gate.answer_done("t2")  # another turn's end changes nothing
    assert gate.closed(100.0)
    gate.answer_done("t1")
    assert gate.opens_at() == pytest.approx(1.8) and not gate.closed(100.0)


def test_a_client_report_opens_the_gate_even_mid_answer() -> None:
    gate = MicGate(tail=0.3, slack=0.5)
    gate.audio_sent("t1", 1.0, now=0.0)
    gate.playback_finished("t1", now=2.0)  # the client stopped playing (or barged in)
    assert gate.opens_at() == pytest.approx(2.3) and not gate.closed(2.4)


def test_gate_opens_tail_after_client_reports_finished() -> None:
    gate = MicGate(tail=0.3, slack=0.5)
    gate.audio_sent("t1", 4.0, now=0.0)
    assert gate.playback_finished("t2", now=1.0) is False  # another turn's report changes nothing
    assert gate.playback_finished("t1", now=2.0) is True  # stopped early (or played faster)
    assert gate.opens_at() == pytest.approx(2.3)
    assert gate.playback_finished("t1", now=2.1) is False  # reported once


def test_original_fixed_pause_is_a_setting() -> None:
    gate = MicGate(tail=3.0, slack=0.0)
    gate.audio_sent("t1", 1.0, now=0.0)
    gate.playback_finished("t1", now=1.0)
    assert gate.closed(3.9) and not gate.closed(4.01)


def test_gate_release() -> None:
    gate = MicGate(tail=1.0, slack=1.0)
    gate.audio_sent("t1", 1.0, now=0.0)
    gate.release()
    assert not gate.closed(0.5) and gate.opens_at() is None


def test_audio_clock_maps_stream_positions_to_arrival() -> None:
    clock = AudioClock()
    for i in range(10):  # ten 100 ms chunks arriving every 100 ms from t=100
        clock.add(0.1, 100.0 + i * 0.1)
    assert clock.sent == pytest.approx(1.0)
    assert clock.wall_at(0.05) == pytest.approx(100.0)
    assert clock.wall_at(0.55) == pytest.approx(100.5)
    assert clock.wall_at(5.0) == pytest.approx(100.9)  # past the end: the last arrival
    clock.reset()
    assert clock.wall_at(0.1) is None


def cfg(**kw: object) -> pb.SessionConfig:
    return pb.SessionConfig(**kw)  # type: ignore[arg-type]


def test_session_defaults() -> None:
    s = SessionSettings.from_config(cfg(), OrchestratorSettings())
    assert s.language == "fr" and s.input_rate == 16000 and s.feedback_tail == 0.3 and not s.barge_in
    assert len(s.session_id) == 32
    s = SessionSettings.from_config(cfg(feedback_tail_ms=0, language="EN", session_id="abc-1"), OrchestratorSettings())
    assert s.feedback_tail == 0.0 and s.language == "en" and s.session_id == "abc-1"


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (cfg(session_id="../etc"), "config.session_id"),
        (cfg(language="french"), "config.language"),
        (cfg(input_format=audio_pb2.AudioFormat(sample_rate_hz=11025)), "config.input_format.sample_rate_hz"),
        (
            cfg(input_format=audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_WAV)),
            "config.input_format.encoding",
        ),
        (cfg(input_format=audio_pb2.AudioFormat(channels=2)), "config.input_format.channels"),
        (cfg(output_sample_rate_hz=4000), "config.output_sample_rate_hz"),
        (cfg(end_of_speech_silence_ms=50), "config.end_of_speech_silence_ms"),
        (cfg(feedback_tail_ms=60_000), "config.feedback_tail_ms"),
    ],
)
def test_bad_session_config_names_the_field(config: pb.SessionConfig, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        SessionSettings.from_config(config, OrchestratorSettings())
    assert field in err.value.fields
