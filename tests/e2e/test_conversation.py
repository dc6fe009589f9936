"""The whole product on real models: speak, get an answer out loud, turn after turn."""

from __future__ import annotations

import asyncio
import difflib
import re
import time

import pytest
from prometheus_client import REGISTRY

from parole.audio.v1 import audio_pb2
from parole.orchestrator.v1 import orchestrator_pb2 as pb
from parole.stt.v1 import stt_pb2, stt_pb2_grpc
from services.models.store import ModelStore
from services.runtime.audio import read_wav
from services.testkit.speech import espeak, piper_joe, real_samples
from tests.conftest import REPO
from tests.e2e.conftest import Orchestrator
from tests.e2e.driver import Session, config, final_transcript, is_kind, last_audio

LONG_ANSWERS = "You are a storyteller. Always answer with at least four full sentences, in plain words."


def words(text: str) -> list[str]:
    return re.sub(r"[^\w' ]+", " ", text.lower()).split()


async def transcribe(stub: stt_pb2_grpc.SttServiceAsyncStub, pcm: bytes, rate: int, language: str) -> str:
    fmt = audio_pb2.AudioFormat(sample_rate_hz=rate, encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE)
    reply = await stub.Recognize(
        stt_pb2.RecognizeRequest(config=stt_pb2.RecognitionConfig(language=language, audio_format=fmt), audio=pcm)
    )
    return reply.result.transcript


def answer_audio(session: Session, turn_id: str) -> tuple[bytes, int]:
    parts = [m.reply_audio for m in session.of("reply_audio") if m.turn_id == turn_id]
    rates = {p.format.sample_rate_hz for p in parts if p.audio}
    assert len(rates) == 1, f"one sample rate per turn, got {rates}"
    return b"".join(p.audio for p in parts), rates.pop()


async def test_spoken_question_gets_a_spoken_answer(
    orchestrator: Orchestrator, stt_stub: stt_pb2_grpc.SttServiceAsyncStub, model_store: ModelStore
) -> None:
    s = Session(orchestrator.stub, config(language="en"))
    started = await s.wait_for(is_kind("session_started"))
    assert started.session_started.language == "en" and started.session_started.session_id
    # The bundled demo recording: fixed audio (Piper's own output varies run to run, and
    # Whisper base now and then hears "France" as "friends").
    q = read_wav(REPO / "client" / "demo" / "en-capital-france.wav")
    await s.say(q.data, q.sample_rate)
    heard = await s.wait_for(final_transcript, timeout=30)
    assert {"capital", "france"} <= set(words(heard.transcript.text))
    done = await s.wait_for(last_audio, timeout=90)
    lat = (await s.wait_for(is_kind("latency"), timeout=10)).latency
    assert "paris" in words(lat.reply_text)
    # Stages overlap: first audio comes before the last, and after the first token.
    assert (
        0 < lat.final_transcript_seconds <= lat.first_token_seconds <= lat.first_audio_seconds < lat.last_audio_seconds
    )
    assert lat.audio_seconds > 0.5 and not lat.interrupted and not lat.degraded_stages
    # What was said out loud is what was written: the answer's audio transcribes back to it.
    pcm, rate = answer_audio(s, done.turn_id)
    spoken = " ".join(words(await transcribe(stt_stub, pcm, rate, "en")))
    written = " ".join(words(lat.reply_text))
    # Character-level similarity: Whisper may merge words ("France is" → "Francis").
    assert difflib.SequenceMatcher(None, spoken, written).ratio() >= 0.8, (spoken, written)
    # Sequence numbers are contiguous, and the client is told the microphone is gated.
    seqs = [m.reply_audio.sequence for m in s.of("reply_audio") if m.turn_id == done.turn_id]
    assert seqs == list(range(len(seqs)))
    assert s.of("microphone")[0].microphone.gated
    assert REGISTRY.get_sample_value("parole_turn_latency_seconds_count", {"stage": "first_audio"})
    await s.close()
    assert s.error is None


async def test_real_french_voice_turn(orchestrator: Orchestrator, speech_dir: object) -> None:
    from pathlib import Path

    sample = next(x for x in real_samples(Path(str(speech_dir))) if x.path.name == "stp_fr_quelle_heure_est_il.wav")
    pcm = read_wav(sample.path)
    s = Session(orchestrator.stub, config(language="fr"))
    await s.say(pcm.data, pcm.sample_rate)
    heard = await s.wait_for(final_transcript, timeout=30)
    assert "heure" in words(heard.transcript.text)
    lat = (await s.wait_for(is_kind("latency"), timeout=90)).latency
    assert lat.reply_text.strip() and lat.audio_seconds > 0.3
    await s.close()


async def test_typed_turn_and_context_across_turns(orchestrator: Orchestrator) -> None:
    s = Session(orchestrator.stub, config(language="en"))
    s.send_text("My name is Alice. Please remember it.")
    await s.wait_for(is_kind("latency"), timeout=90)
    mark = len(s.events)
    s.send_text("What is my name?")
    lat = (await s.wait_for(is_kind("latency"), timeout=90, start=mark)).latency
    assert "alice" in words(lat.reply_text)
    await s.close()


async def test_audio_during_playback_is_not_heard(orchestrator: Orchestrator, model_store: ModelStore) -> None:
    s = Session(orchestrator.stub, config(language="en", persona=LONG_ANSWERS))
    await s.say(piper_joe("Tell me about the moon.", model_store).data)
    gated = await s.wait_for(lambda m: m.WhichOneof("event") == "microphone" and m.microphone.gated, timeout=60)
    # The assistant's own voice (or anyone) speaking while the answer plays is ignored.
    await s.say(piper_joe("The quick brown fox jumps over the lazy dog.", model_store).data, trailing_silence=0.5)
    done = await s.wait_for(last_audio, timeout=120)
    assert done.turn_id == gated.turn_id
    s.playback(pb.PLAYBACK_EVENT_TYPE_FINISHED, done.turn_id)
    await s.wait_for(lambda m: m.WhichOneof("event") == "microphone" and not m.microphone.gated, timeout=30)
    mark = len(s.events)
    await s.say(piper_joe("How far away is the sun?", model_store).data)
    heard = await s.wait_for(final_transcript, timeout=30, start=mark)
    assert "sun" in words(heard.transcript.text)
    finals = [m.transcript.text for m in s.of("transcript") if m.transcript.is_final]
    assert not any("fox" in words(t) for t in finals), finals
    await s.wait_for(is_kind("latency"), timeout=120, start=mark)
    await s.close()


async def test_barge_in_cancels_the_answer_and_the_next_turn_proceeds(
    orchestrator: Orchestrator, model_store: ModelStore
) -> None:
    s = Session(orchestrator.stub, config(language="en", barge_in=True, persona=LONG_ANSWERS))
    await s.say(piper_joe("Tell me a story about a dragon.", model_store).data)
    first = await s.wait_for(is_kind("reply_audio"), timeout=60)
    await s.say(piper_joe("Stop. What is two plus two?", model_store).data)
    stop = await s.wait_for(is_kind("stop_playback"), timeout=30)
    assert stop.stop_playback.turn_id == first.turn_id and stop.stop_playback.reason == "barge_in"
    cut = await s.wait_for(lambda m: m.WhichOneof("event") == "latency" and m.turn_id == first.turn_id, timeout=30)
    assert cut.latency.interrupted
    heard = await s.wait_for(
        lambda m: final_transcript(m) and m.turn_id != first.turn_id and "plus" in words(m.transcript.text), timeout=30
    )
    assert {"two", "2"} & set(words(heard.transcript.text))
    nxt = await s.wait_for(lambda m: m.WhichOneof("event") == "latency" and m.turn_id == heard.turn_id, timeout=120)
    assert not nxt.latency.interrupted and nxt.latency.reply_text
    await s.close()


async def test_five_concurrent_sessions_each_complete_a_turn(
    orchestrator: Orchestrator, model_store: ModelStore
) -> None:
    questions = [
        ("en", piper_joe("What is the capital of Italy?", model_store).data, "italy"),
        ("en", piper_joe("How many days are in a week?", model_store).data, "week"),
        ("en", piper_joe("What color is the sky?", model_store).data, "sky"),
        ("fr", espeak("Quelle est la capitale de l'Espagne ?", "fr").data, "capitale"),
        ("en", piper_joe("Name a big animal.", model_store).data, "animal"),
    ]

    async def one(language: str, pcm: bytes, key: str) -> pb.TurnLatency:
        s = Session(orchestrator.stub, config(language=language, persona="Answer in one short sentence."))
        await s.say(pcm)
        heard = await s.wait_for(final_transcript, timeout=60)
        assert key in words(heard.transcript.text), heard.transcript.text
        lat = (await s.wait_for(is_kind("latency"), timeout=240)).latency
        await s.close()
        return lat

    results = await asyncio.gather(*(one(*q) for q in questions))
    assert all(r.reply_text and r.audio_seconds > 0 and not r.interrupted for r in results)


@pytest.mark.parametrize("when", ["before", "mid_answer"])
async def test_llm_failure_degrades_to_a_useful_turn(orchestrator: Orchestrator, fleet: object, when: str) -> None:
    from tests.e2e.conftest import Fleet

    assert isinstance(fleet, Fleet)
    s = Session(orchestrator.stub, config(language="en", persona=LONG_ANSWERS))
    if when == "before":
        await fleet.proxies["llm"].kill()
    s.send_text("Tell me about rivers.")
    if when == "mid_answer":
        await s.wait_for(is_kind("reply_text"), timeout=60)
        await fleet.proxies["llm"].kill()
    err = await s.wait_for(is_kind("error"), timeout=60)
    assert err.error.stage == pb.STAGE_LLM and err.error.degraded
    lat = (await s.wait_for(is_kind("latency"), timeout=60)).latency
    assert pb.STAGE_LLM in lat.degraded_stages and lat.reply_text
    if when == "before":
        assert "unavailable" in lat.reply_text and "rivers" in lat.reply_text  # says what it heard
        assert lat.audio_seconds > 0  # and says it out loud
    await s.close()


async def test_tts_failure_mid_answer_leaves_the_text(orchestrator: Orchestrator, fleet: object) -> None:
    from tests.e2e.conftest import Fleet

    assert isinstance(fleet, Fleet)
    s = Session(orchestrator.stub, config(language="en", persona=LONG_ANSWERS))
    s.send_text("Tell me about mountains.")
    await s.wait_for(is_kind("reply_audio"), timeout=60)
    await fleet.proxies["tts"].kill()
    err = await s.wait_for(is_kind("error"), timeout=60)
    assert err.error.stage == pb.STAGE_TTS and err.error.degraded and "text only" in err.error.message
    lat = (await s.wait_for(is_kind("latency"), timeout=90)).latency
    assert pb.STAGE_TTS in lat.degraded_stages and len(words(lat.reply_text)) > 10
    await s.close()


async def test_stt_down_keeps_the_session_open(
    orchestrator: Orchestrator, fleet: object, model_store: ModelStore
) -> None:
    from tests.e2e.conftest import Fleet

    assert isinstance(fleet, Fleet)
    await fleet.proxies["stt"].kill()
    s = Session(orchestrator.stub, config(language="en"))
    await s.stream_audio(piper_joe("Hello?", model_store).data)
    err = await s.wait_for(is_kind("error"), timeout=30)
    assert err.error.stage == pb.STAGE_STT and not err.error.degraded and err.error.code == "UNAVAILABLE"
    s.send_text("Are you there?")  # typed turns still work
    lat = (await s.wait_for(is_kind("latency"), timeout=90)).latency
    assert lat.reply_text
    # STT comes back: the session reconnects and hears again.
    await fleet.proxies["stt"].revive()
    # Ask until heard: the stream reopens within its back-off (at most 2 s), and a question
    # said while it reopens may be heard only in part.
    question = piper_joe("What is the capital of Germany?", model_store).data
    deadline = time.monotonic() + 60
    while True:
        mark = len(s.events)
        await s.say(question)
        try:
            heard = await s.wait_for(final_transcript, timeout=15, start=mark)
            if "germany" in words(heard.transcript.text):
                break
        except AssertionError:
            assert not s.done.is_set(), f"the session ended: {s.error}"
        assert time.monotonic() < deadline, "the session never heard again after STT came back"
    await s.close()


async def test_a_sentence_paused_where_it_sounds_finished_is_answered_once_whole(
    orchestrator: Orchestrator, speech_dir: object
) -> None:
    """A real speaker pauses a full second at "…en trente-huit et quarante", which the
    end-of-turn model takes for the end, then goes on: the orchestrator answers the whole
    sentence once, and nothing is heard for its first half alone."""
    from pathlib import Path

    clip = Path(str(speech_dir)) / "turns" / "fr" / "fr_sppas_c006p6_tailles.wav"
    if not clip.is_file():
        pytest.skip(f"no {clip}")
    pcm = read_wav(clip)
    s = Session(orchestrator.stub, config(language="fr"))
    await s.say(pcm.data, pcm.sample_rate)
    answered = await s.wait_for(lambda m: is_kind("latency")(m) and not m.latency.interrupted, timeout=120)
    heard = {m.turn_id for m in s.of("reply_audio") if m.reply_audio.audio}
    assert heard == {answered.turn_id}, "an answer to the first half alone was heard"
    whole = next(m for m in s.of("transcript") if m.transcript.is_final and m.turn_id == answered.turn_id)
    assert {"beige", "couleur"} <= set(words(whole.transcript.text)), whole.transcript.text
    await s.close()
