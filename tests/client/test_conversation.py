"""The client's streaming logic against a scripted fake orchestrator (no models, no sound card)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from client.cli import converse, main
from client.conversation import Conversation, ConversationError, SessionOptions
from client.report import Rater, save_report
from client.sinks import VirtualSink
from parole.orchestrator.v1 import orchestrator_pb2 as pb
from services.runtime.audio import Pcm, read_wav, silence, write_wav
from services.runtime.channel import ChannelSettings
from tests.client.conftest import FakeServer
from tests.client.fake_orchestrator import Script, tone

Channels = Callable[[str], grpc.aio.Channel]


def question(seconds: float = 0.6, rate: int = 16000) -> Pcm:
    """A "spoken question": a tone the fake's energy detector hears as speech."""
    return Pcm(silence(0.2, rate) + tone(seconds, rate) + silence(0.2, rate), rate)


async def test_config_goes_first_with_the_session_settings(fake_server: FakeServer, open_channels: Channels) -> None:
    fake, target = await fake_server.start()
    options = SessionOptions(language="en", voice="joe", persona="Be brief.", barge_in=True, feedback_tail_ms=250)
    async with Conversation(open_channels(target), options, VirtualSink()) as conv:
        assert conv.session is not None and conv.session.language == "en" and conv.session.voice == "joe"
    first = fake.sessions[0].requests[0][1]
    assert first.WhichOneof("request") == "config"
    cfg = first.config
    assert (cfg.language, cfg.voice, cfg.persona, cfg.barge_in) == ("en", "joe", "Be brief.", True)
    assert cfg.HasField("feedback_tail_ms") and cfg.feedback_tail_ms == 250
    assert cfg.input_format.sample_rate_hz == 16000 and cfg.input_format.channels == 1
    # Unset means "server default", which proto3 can only say by leaving the field absent.
    default = SessionOptions().config()
    assert not default.HasField("feedback_tail_ms")


async def test_audio_is_resampled_chunked_and_paced_in_real_time(
    fake_server: FakeServer, open_channels: Channels
) -> None:
    fake, target = await fake_server.start()
    async with Conversation(open_channels(target), SessionOptions(), VirtualSink()) as conv:
        began = time.monotonic()
        # 48 kHz in: the client must resample to the 16 kHz it announced.
        turn = await conv.speak(question(0.6, 48000), label="q.wav", turn_timeout=10)
    assert turn is not None
    audio = fake.sessions[0].of("audio")
    sizes = {len(r.audio) for _, r in audio}
    assert sizes == {3200}, sizes
    # 0.2 s lead + 0.6 s tone = 8 chunks before the first silent chunk after speech; the fake
    # counts the loud ones (6) and reports them as what it heard.
    assert turn.heard == "6 chunks of speech"
    assert turn.input == "q.wav"
    # Real-time pace: the question's 1.0 s of audio took about 1.0 s to send (not a burst).
    speech_times = [t for t, _ in audio[:10]]
    assert 0.8 <= speech_times[-1] - speech_times[0] <= 1.3
    assert speech_times[0] >= began
    # Silence followed the question so the server could detect its end.
    assert any(not any(r.audio) for _, r in audio[10:])


async def test_playback_events_bracket_the_answer_audio(fake_server: FakeServer, open_channels: Channels) -> None:
    fake, target = await fake_server.start(Script(chunks=3, chunk_seconds=0.2))
    async with Conversation(open_channels(target), SessionOptions(), VirtualSink()) as conv:
        turn = await conv.speak(question(), turn_timeout=10)
    assert turn is not None and turn.turn_id == "turn-1"
    rec = fake.sessions[0]
    events = [(t, r.playback) for t, r in rec.of("playback")]
    assert [e.type for _, e in events] == [pb.PLAYBACK_EVENT_TYPE_STARTED, pb.PLAYBACK_EVENT_TYPE_FINISHED]
    assert {e.turn_id for _, e in events} == {"turn-1"}
    first_audio_sent = rec.sent("reply_audio")[0][0]
    assert events[0][0] >= first_audio_sent
    # FINISHED only after the 0.6 s of answer audio had been "played" at real-time pace.
    assert events[1][0] - events[0][0] >= 0.55
    # speak() returned only once the gate reopened, and the answer is complete.
    assert conv.mic_open.is_set()
    assert turn.reply == "Paris is the capital." and turn.audio_chunks == 4
    assert turn.latency is not None and turn.latency.first_audio_seconds == pytest.approx(0.3)
    assert abs(turn.audio_seconds - 0.6) < 0.01


@pytest.mark.parametrize("names_turn", [True, False], ids=["turn-named", "no-turn-named"])
async def test_stop_playback_flushes_the_answer_and_reports_finished(
    fake_server: FakeServer, open_channels: Channels, names_turn: bool
) -> None:
    script = Script(chunks=3, chunk_seconds=1.0, stop_after_first_chunk=True, stop_names_turn=names_turn)
    fake, target = await fake_server.start(script)
    sink = VirtualSink()
    async with Conversation(open_channels(target), SessionOptions(barge_in=True), sink) as conv:
        turn = await conv.speak(question(), turn_timeout=10)
    assert turn is not None and turn.stopped == "barge_in"
    rec = fake.sessions[0]
    stop_sent = rec.sent("stop_playback")[0][0]
    finished = [t for t, r in rec.of("playback") if r.playback.type == pb.PLAYBACK_EVENT_TYPE_FINISHED]
    assert len(finished) == 1
    assert finished[0] - stop_sent < 0.3, "FINISHED must follow stop_playback at once, not after the audio"
    # Only about 0.15 s of the 1 s chunk was heard, and the chunk sent after the stop never was.
    heard = len(sink.played["turn-1"]) / 2 / 22050
    assert 0.05 < heard < 0.5
    assert turn.latency is not None and turn.latency.interrupted


async def test_answers_are_written_to_wav_at_the_reply_rate(
    fake_server: FakeServer, open_channels: Channels, tmp_path: Path
) -> None:
    fake, target = await fake_server.start(Script(chunks=2, chunk_seconds=0.1))
    sink = VirtualSink(tmp_path, paced=True)
    async with Conversation(open_channels(target), SessionOptions(output_sample_rate_hz=24000), sink) as conv:
        first = await conv.speak(question(), turn_timeout=10)
        second = await conv.speak(question(0.4), turn_timeout=10)
    assert first is not None and second is not None
    assert first.reply_wav == tmp_path / "reply-01.wav" and second.reply_wav == tmp_path / "reply-02.wav"
    for turn in (first, second):
        assert turn.reply_wav is not None
        wav = read_wav(turn.reply_wav)
        assert wav.sample_rate == 24000
        assert abs(wav.duration - 0.2) < 0.001
    assert fake.sessions[0].requests[0][1].config.output_sample_rate_hz == 24000
    # The second question was sent after the gate reopened, so none of it was ignored.
    assert second.heard == "4 chunks of speech"


async def test_text_mode_sends_typed_turns_and_prints_them(fake_server: FakeServer) -> None:
    fake, target = await fake_server.start(Script(chunks=1, chunk_seconds=0.1))

    async def typed() -> AsyncIterator[str]:
        for line in ["Bonjour\n", "   \n", "Quelle heure est-il ?\n"]:
            yield line

    out = io.StringIO()
    outcome = await converse(
        target=ChannelSettings(target=target),
        options=SessionOptions(language="fr"),
        sink=VirtualSink(paced=False),
        texts=typed(),
        out=out,
        turn_timeout=10,
    )
    rec = fake.sessions[0]
    assert [r.text for _, r in rec.of("text")] == ["Bonjour", "Quelle heure est-il ?"]
    assert rec.of("audio") == []
    assert [t.heard for t in outcome.turns] == ["Bonjour", "Quelle heure est-il ?"]
    printed = out.getvalue()
    assert "heard:    Bonjour" in printed and "answered: Paris is the capital." in printed
    assert "latency: final transcript 0.10 s · first token 0.20 s · first audio 0.30 s · last audio 0.40 s" in printed


async def test_validation_report_holds_turns_ratings_and_comments(fake_server: FakeServer, tmp_path: Path) -> None:
    _, target = await fake_server.start(Script(chunks=1, chunk_seconds=0.1))
    # "7" is out of range and must be asked again.
    answers = iter(["7", "4", "3", "a bit slow", "5", "5", ""])
    rater = Rater(ask=lambda prompt: next(answers), out=io.StringIO())
    outcome = await converse(
        target=ChannelSettings(target=target),
        options=SessionOptions(language="en"),
        sink=VirtualSink(tmp_path / "audio"),
        wavs=[(question(), "one.wav"), (question(0.4), "two.wav")],
        rater=rater,
        out=io.StringIO(),
        turn_timeout=10,
    )
    path = save_report(tmp_path / "report.json", outcome.report())
    report = json.loads(path.read_text())
    assert report["protocol"] == "parole-human-validation/1"
    assert report["session"]["mode"] == "wav" and report["session"]["language"] == "en"
    assert [t["input"] for t in report["turns"]] == ["one.wav", "two.wav"]
    one, two = report["turns"]
    assert one["rating"]["transcription_accuracy"] == 4 and one["rating"]["perceived_latency"] == 3
    assert one["rating"]["comment"] == "a bit slow"
    assert two["rating"] == {**two["rating"], "transcription_accuracy": 5, "perceived_latency": 5, "comment": ""}
    assert one["heard"] == "6 chunks of speech" and one["reply"] == "Paris is the capital."
    assert set(one["latency"]) == {
        "final_transcript_seconds",
        "first_token_seconds",
        "first_audio_seconds",
        "last_audio_seconds",
        "audio_seconds",
        "interrupted",
        "degraded_stages",
    }
    assert one["client_first_audio_seconds"] > 0
    assert one["started_at"] <= one["finished_at"] <= report["finished_at"]
    assert one["reply_wav"] == str(tmp_path / "audio" / "reply-01.wav")
    assert read_wav(one["reply_wav"]).duration > 0
    assert report["summary"]["mean_transcription_accuracy"] == 4.5
    assert report["summary"]["mean_perceived_latency"] == 4.0
    assert report["summary"]["turns"] == 2 and report["summary"]["rated"] == 2


async def test_a_refused_session_is_a_clear_error(fake_server: FakeServer, open_channels: Channels) -> None:
    _, target = await fake_server.start(Script(abort=grpc.StatusCode.UNAVAILABLE))
    with pytest.raises(ConversationError, match="UNAVAILABLE: fake: stage down"):
        await Conversation(open_channels(target), SessionOptions(), VirtualSink()).start()


async def test_cli_wav_mode_writes_answers_without_a_sound_card(fake_server: FakeServer, tmp_path: Path) -> None:
    fake, target = await fake_server.start(Script(chunks=2, chunk_seconds=0.1))
    q = question()
    write_wav(tmp_path / "q.wav", q.data, q.sample_rate)
    out_dir = tmp_path / "out"
    # main() runs its own event loop; a thread leaves this one free to serve the fake.
    code = await asyncio.to_thread(
        main, ["--target", target, "--wav", str(tmp_path / "q.wav"), "--out-dir", str(out_dir), "--language", "en"]
    )
    assert code == 0
    assert read_wav(out_dir / "reply-01.wav").sample_rate == 22050
    assert fake.sessions[0].requests[0][1].config.language == "en"
