"""Turn-level behaviour of the orchestrator with no model: the real server, stages and stubs
over fake STT, LLM and TTS services (tests/orchestrator/fakes.py). Every wait has a deadline
and waits on an event (a message from the server, a fake seeing a call), never a fixed sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest
from prometheus_client import REGISTRY

from parole.orchestrator.v1 import orchestrator_pb2 as pb
from services.orchestrator.turn import POINTS
from services.runtime.audio import silence
from tests.e2e.driver import Predicate, Session, final_transcript, is_kind
from tests.orchestrator.conftest import Harness
from tests.orchestrator.fakes import final, resumed, speculative, speech_event

WAIT = 15.0
UNHURRIED = tuple(p for p in POINTS if p not in ("wait_notice", "answer_slot"))
"""A turn's points when nothing made it wait for the language model."""
ANSWER = "Paris is the capital of France."


def of_turn(kind: str, turn_id: str) -> Predicate:
    return lambda m: m.WhichOneof("event") == kind and m.turn_id == turn_id


def index(s: Session, pred: Predicate) -> int:
    return next(i for i, (_, m) in enumerate(s.events) if pred(m))


def microphone(gated: bool, reason: str) -> Predicate:
    return lambda m: (
        m.WhichOneof("event") == "microphone" and m.microphone.gated == gated and m.microphone.reason == reason
    )


def marks(lat: pb.TurnLatency) -> dict[str, float]:
    return {m.point: m.seconds for m in lat.marks}


def assert_every_hop_in_order(lat: pb.TurnLatency, points: tuple[str, ...]) -> None:
    """The record names each hop the turn went through, in pipeline order, and time only
    moves forward along it; the older fields agree with their marks."""
    assert [m.point for m in lat.marks] == list(points)
    seconds = [m.seconds for m in lat.marks]
    assert seconds == sorted(seconds), list(zip(points, seconds, strict=True))
    at = marks(lat)
    assert (lat.final_transcript_seconds, lat.first_token_seconds) == (at["final_transcript"], at["first_token"])
    assert (lat.first_audio_seconds, lat.last_audio_seconds) == (at["first_audio"], at["last_audio"])


async def started(s: Session) -> pb.SessionStarted:
    return (await s.wait_for(is_kind("session_started"), timeout=WAIT)).session_started


async def test_typed_turn_streams_the_answer_as_text_and_audio_then_its_record(harness: Harness) -> None:
    s = harness.session()
    session = await started(s)
    s.send_text("  What is the capital of France?  ")
    record = await s.wait_for(is_kind("latency"), timeout=WAIT)
    turn_id = record.turn_id
    llm, tts = harness.fakes.llm, harness.fakes.tts
    assert [(r.text, r.session_id) for r in llm.requests] == [("What is the capital of France?", session.session_id)]
    assert llm.requests[0].options.language == "en"
    # Each piece of text goes to the client and into the TTS stream as it comes.
    assert [m.reply_text.delta for m in s.of("reply_text")] == list(llm.reply) == tts.texts
    assert tts.configs[0].language == "en"
    audio = [m.reply_audio for m in s.of("reply_audio") if m.turn_id == turn_id]
    assert [a.sequence for a in audio] == [0, 1, 2, 3]
    assert all(a.audio for a in audio[:3]) and [a.text for a in audio[:3]] == list(llm.reply)
    assert audio[-1].is_last and not audio[-1].audio and audio[-1].format.sample_rate_hz == 16000
    lat = record.latency
    assert lat.reply_text == ANSWER and lat.audio_seconds == pytest.approx(0.3)
    # Typed: timed from the text's arrival, so the "final transcript" is at 0.
    assert 0 == lat.final_transcript_seconds <= lat.first_token_seconds <= lat.first_audio_seconds
    assert lat.first_audio_seconds <= lat.last_audio_seconds
    assert not lat.interrupted and not lat.degraded_stages
    # Every hop from the text's arrival; no pause transcript nor end of speech for a typed turn.
    assert_every_hop_in_order(lat, UNHURRIED[2:])
    await s.close(timeout=WAIT)
    assert s.error is None


async def test_a_final_with_words_becomes_a_turn_timed_from_the_end_of_speech(harness: Harness) -> None:
    stt, llm = harness.fakes.stt, harness.fakes.llm
    s = harness.session(end_of_speech_silence_ms=400)
    await started(s)
    async with asyncio.timeout(WAIT):
        await stt.connected.wait()
    await s.stream_audio(silence(1.0), realtime=False)
    async with asyncio.timeout(WAIT):
        while stt.audio_bytes < 32000:  # the whole second reached the STT stream
            stt.audio_arrived.clear()
            await stt.audio_arrived.wait()
    assert stt.configs[0].audio_format.sample_rate_hz == 16000 and stt.configs[0].end_of_speech_silence_ms == 400
    # As the STT sends them: each utterance's end, then its final.
    for said in (". . .", "What time is it?"):  # Whisper's transcript of a cough: shown, not answered
        stt.send(speech_event(True))
        stt.send(speech_event(False))
        stt.send(final(said, end_seconds=0.5))
    record = await s.wait_for(is_kind("latency"), timeout=WAIT)
    assert [(m.transcript.text, m.turn_id) for m in s.of("transcript")] == [
        (". . .", ""),
        ("What time is it?", record.turn_id),
    ]
    assert [m.speech.started for m in s.of("speech")] == [True, False, True, False]
    assert [r.text for r in llm.requests] == ["What time is it?"]
    # The turn starts when the voice stopped (audio that arrived before the final did).
    assert record.latency.final_transcript_seconds > 0
    # Every hop, from the STT saying the turn ended to the last audio released (no pause
    # transcript came first, so the turn was not answered ahead).
    assert_every_hop_in_order(record.latency, UNHURRIED[1:])
    assert marks(record.latency)["end_of_turn"] > 0
    await s.close(timeout=WAIT)
    assert s.error is None


async def test_barge_in_cancels_the_answer_and_stops_playback(harness: Harness) -> None:
    stt, llm = harness.fakes.stt, harness.fakes.llm
    llm.hold = asyncio.Event()  # the LLM says its first words, then keeps thinking
    s = harness.session(barge_in=True)
    await started(s)
    async with asyncio.timeout(WAIT):
        await stt.connected.wait()
    s.send_text("Tell me a long story.")
    first = await s.wait_for(is_kind("reply_audio"), timeout=WAIT)
    stt.send(speech_event(True))  # the user speaks over the answer
    stop = await s.wait_for(is_kind("stop_playback"), timeout=WAIT)
    assert stop.turn_id == stop.stop_playback.turn_id == first.turn_id and stop.stop_playback.reason == "barge_in"
    cut = await s.wait_for(of_turn("latency", first.turn_id), timeout=WAIT)
    assert cut.latency.interrupted and cut.latency.reply_text == "Paris is "
    assert index(s, is_kind("stop_playback")) < index(s, of_turn("latency", first.turn_id))
    async with asyncio.timeout(WAIT):
        await llm.cancelled.wait()  # the LLM call was cancelled, not left generating
    assert not [m for m in s.of("reply_audio") if m.turn_id == first.turn_id and m.reply_audio.is_last]
    # With barge-in the microphone is never ignored, so the client hears nothing of a gate.
    assert not s.of("microphone")
    # The next turn proceeds.
    llm.hold = None
    stt.send(final("What is two plus two?"))
    heard = await s.wait_for(lambda m: final_transcript(m) and m.turn_id != "", timeout=WAIT)
    nxt = await s.wait_for(of_turn("latency", heard.turn_id), timeout=WAIT)
    assert not nxt.latency.interrupted and nxt.latency.reply_text == ANSWER
    await s.close(timeout=WAIT)


async def test_interrupt_while_the_answer_plays_stops_it_and_opens_the_gate(harness: Harness) -> None:
    s = harness.session()
    await started(s)
    s.send_text("Hello")
    record = await s.wait_for(is_kind("latency"), timeout=WAIT)  # all sent; the client still plays it
    s.interrupt()
    stop = await s.wait_for(is_kind("stop_playback"), timeout=WAIT)
    assert stop.stop_playback.turn_id == record.turn_id and stop.stop_playback.reason == "interrupt"
    await s.wait_for(microphone(False, "open"), timeout=WAIT)
    # Nothing is playing now: another interrupt says nothing (the next turn's record is the
    # barrier: the server reads the client's messages in order).
    s.interrupt()
    s.send_text("Again")
    mark = len(s.events)
    await s.wait_for(is_kind("latency"), timeout=WAIT, start=mark)
    assert len(s.of("stop_playback")) == 1
    await s.close(timeout=WAIT)


async def test_an_llm_outage_degrades_to_a_spoken_canned_reply(harness: Harness) -> None:
    harness.fakes.llm.fail = grpc.StatusCode.UNAVAILABLE
    s = harness.session()
    await started(s)
    s.send_text("Tell me about rivers.")
    err = await s.wait_for(is_kind("error"), timeout=WAIT)
    assert err.error.stage == pb.STAGE_LLM and err.error.degraded and err.error.code == "UNAVAILABLE"
    assert "fallback reply" in err.error.message
    lat = (await s.wait_for(of_turn("latency", err.turn_id), timeout=WAIT)).latency
    assert "unavailable" in lat.reply_text and "Tell me about rivers." in lat.reply_text  # says what it heard
    assert harness.fakes.tts.texts == [lat.reply_text] and lat.audio_seconds > 0  # out loud
    assert list(lat.degraded_stages) == [pb.STAGE_LLM] and not lat.interrupted
    await s.close(timeout=WAIT)


async def test_the_llm_services_own_fallback_is_spoken_and_reported(harness: Harness) -> None:
    harness.fakes.llm.fallback = True
    s = harness.session()
    await started(s)
    s.send_text("Hi")
    err = await s.wait_for(is_kind("error"), timeout=WAIT)
    assert err.error.stage == pb.STAGE_LLM and err.error.degraded
    lat = (await s.wait_for(is_kind("latency"), timeout=WAIT)).latency
    assert lat.reply_text == ANSWER and lat.audio_seconds > 0 and list(lat.degraded_stages) == [pb.STAGE_LLM]
    await s.close(timeout=WAIT)


async def test_after_three_llm_outages_the_breaker_skips_the_llm(harness: Harness) -> None:
    llm = harness.fakes.llm
    llm.fail = grpc.StatusCode.UNAVAILABLE
    s = harness.session()
    await started(s)
    errors, records = [], []
    for i in range(4):
        mark = len(s.events)
        s.send_text(f"Question {i}")
        errors.append((await s.wait_for(is_kind("error"), timeout=WAIT, start=mark)).error)
        records.append((await s.wait_for(is_kind("latency"), timeout=WAIT, start=mark)).latency)
    assert len(llm.requests) == 3  # the fourth turn did not wait on a dead service
    assert "llm_request" in marks(records[2]) and "llm_request" not in marks(records[3])
    assert "circuit breaker is open" in errors[3].message and errors[3].code == "UNAVAILABLE"
    assert "circuit breaker" not in errors[2].message
    await s.close(timeout=WAIT)


async def test_a_tts_outage_sends_the_answer_as_text_only(harness: Harness) -> None:
    harness.fakes.tts.fail = grpc.StatusCode.UNAVAILABLE
    s = harness.session()
    await started(s)
    s.send_text("Tell me about mountains.")
    err = await s.wait_for(is_kind("error"), timeout=WAIT)
    assert err.error.stage == pb.STAGE_TTS and err.error.degraded and "text only" in err.error.message
    lat = (await s.wait_for(is_kind("latency"), timeout=WAIT)).latency
    # The whole answer still arrives as text; no audio, so the microphone was never gated.
    assert lat.reply_text == ANSWER and "".join(m.reply_text.delta for m in s.of("reply_text")) == ANSWER
    assert lat.audio_seconds == 0 and list(lat.degraded_stages) == [pb.STAGE_TTS]
    assert not {"first_tts_audio", "first_audio", "last_audio"} & set(marks(lat))
    assert [m.reply_audio.is_last for m in s.of("reply_audio")] == [True]
    assert not s.of("microphone")
    await s.close(timeout=WAIT)


async def test_another_voice_answering_is_reported_once(harness: Harness) -> None:
    s = harness.session(voice="fr_FR-siwis-medium")
    await started(s)
    s.send_text("Hi")
    lat = (await s.wait_for(is_kind("latency"), timeout=WAIT)).latency
    errors = [m.error for m in s.of("error")]
    assert len(errors) == 1 and errors[0].stage == pb.STAGE_TTS and "fake-voice" in errors[0].message
    assert lat.audio_seconds > 0 and list(lat.degraded_stages) == [pb.STAGE_TTS]
    assert harness.fakes.tts.configs[0].voice == "fr_FR-siwis-medium"
    await s.close(timeout=WAIT)


def gated_audio_seconds() -> float:
    return REGISTRY.get_sample_value("parole_gated_audio_seconds_total") or 0.0


async def test_the_gate_closes_on_the_first_released_audio_and_opens_after_playback_and_tail(
    harness: Harness,
) -> None:
    stt, tts = harness.fakes.stt, harness.fakes.tts
    tts.chunk_seconds = 10.0  # long audio: the gate can only open early because the client says so
    s = harness.session(feedback_tail_ms=200)
    await started(s)
    async with asyncio.timeout(WAIT):
        await stt.connected.wait()
    s.send_text("Hi")
    closed = await s.wait_for(microphone(True, "playback"), timeout=WAIT)
    record = await s.wait_for(is_kind("latency"), timeout=WAIT)
    assert closed.turn_id == record.turn_id
    # It closed as the first answer audio went out: the very next message is that audio.
    after = s.events[index(s, microphone(True, "playback")) + 1][1]
    assert after.WhichOneof("event") == "reply_audio" and after.reply_audio.sequence == 0
    # Closed: the microphone is ignored (counted) and nothing reaches the STT.
    gated_before, heard_before = gated_audio_seconds(), stt.audio_bytes
    await s.stream_audio(silence(0.5), realtime=False)
    s.playback(pb.PLAYBACK_EVENT_TYPE_FINISHED, record.turn_id)
    tail = await s.wait_for(microphone(True, "tail"), timeout=WAIT)  # also the barrier: audio came first
    assert gated_audio_seconds() - gated_before == pytest.approx(0.5)
    assert stt.audio_bytes == heard_before
    opened = await s.wait_for(microphone(False, "open"), timeout=WAIT)
    # The tail after the report, and not the 30 s of audio the TTS sent.
    assert 0.19 <= opened.session_seconds - tail.session_seconds < 10
    # Open: the microphone reaches the STT again.
    stt.audio_arrived.clear()
    await s.stream_audio(silence(0.2), realtime=False)
    async with asyncio.timeout(WAIT):
        await stt.audio_arrived.wait()
    assert stt.audio_bytes > heard_before
    await s.close(timeout=WAIT)


async def test_the_gate_opens_on_its_own_when_the_client_never_reports(harness: Harness) -> None:
    s = harness.session(feedback_tail_ms=0)
    await started(s)
    s.send_text("Hi")
    closed = await s.wait_for(microphone(True, "playback"), timeout=WAIT)
    opened = await s.wait_for(microphone(False, "open"), timeout=WAIT)
    # Three 0.1 s chunks played back to back, plus the 0.5 s slack for client buffering.
    assert opened.session_seconds - closed.session_seconds >= 0.3 + 0.5 - 0.01
    assert not s.of("stop_playback")
    await s.close(timeout=WAIT)


async def test_the_stt_going_down_keeps_the_session_and_typed_turns(harness: Harness) -> None:
    stt = harness.fakes.stt
    stt.fail = grpc.StatusCode.UNAVAILABLE
    s = harness.session()
    await started(s)
    err = await s.wait_for(is_kind("error"), timeout=WAIT)
    assert err.error.stage == pb.STAGE_STT and not err.error.degraded and err.error.code == "UNAVAILABLE"
    s.send_text("Are you there?")
    assert (await s.wait_for(is_kind("latency"), timeout=WAIT)).latency.reply_text == ANSWER
    # Back: the session reopens its stream (within the 2 s reconnect cap) and hears again.
    stt.fail = None
    async with asyncio.timeout(WAIT):
        await stt.connected.wait()
    stt.send(final("Hello again"))
    heard = await s.wait_for(lambda m: final_transcript(m) and m.turn_id != "", timeout=WAIT)
    await s.wait_for(of_turn("latency", heard.turn_id), timeout=WAIT)
    assert len(s.of("error")) == 1  # one report per outage, not one per retry
    await s.close(timeout=WAIT)


async def test_audio_after_the_stt_comes_back_reaches_it_whole(harness: Harness) -> None:
    stt = harness.fakes.stt
    stt.fail = grpc.StatusCode.UNAVAILABLE  # up, but refusing streams (a restart loading its models)
    s = harness.session()
    await started(s)
    async with asyncio.timeout(WAIT):
        while stt.attempts < 4:  # several streams opened and refused while it is down
            stt.attempted.clear()
            await stt.attempted.wait()
    stt.fail = None
    async with asyncio.timeout(WAIT):
        await stt.connected.wait()
    await s.stream_audio(silence(1.0), realtime=False)
    # None of it is lost to the readers of the refused streams.
    async with asyncio.timeout(WAIT):
        while stt.audio_bytes < 32000:
            stt.audio_arrived.clear()
            await stt.audio_arrived.wait()
    assert stt.audio_bytes == 32000
    await s.close(timeout=WAIT)


# ----------------------------------------------------------------------------- answering ahead
async def until(condition: Callable[[], bool], changed: asyncio.Event) -> None:
    """Waits, within the deadline, until ``condition`` holds; ``changed`` is set when it may."""
    async with asyncio.timeout(WAIT):
        while not condition():
            changed.clear()
            await changed.wait()


async def stt_stream(harness: Harness, s: Session) -> None:
    """Waits until the session's STT stream is open, with speculative transcripts asked for."""
    await started(s)
    async with asyncio.timeout(WAIT):
        await harness.fakes.stt.connected.wait()
    assert harness.fakes.stt.configs[-1].speculative_results


async def test_a_pause_transcript_is_answered_ahead_and_released_when_the_final_confirms_it(
    harness: Harness,
) -> None:
    """The LLM and TTS start on the transcript of the pause; nothing reaches the client until
    the final says the same words; then the held answer goes out at once, under the final's
    turn id, and the exchange is remembered (the speculative Generate remembers nothing)."""
    stt, llm, tts = harness.fakes.stt, harness.fakes.llm, harness.fakes.tts
    s = harness.session()
    await stt_stream(harness, s)
    stt.send(speech_event(True))
    stt.send(speculative("What time is it?"))
    await until(lambda: len(tts.texts) == len(llm.reply), tts.spoke)  # all synthesised ahead...
    assert not s.of("reply_text") and not s.of("reply_audio") and not s.of("microphone")  # ...and held
    assert [(r.text, r.speculative) for r in llm.requests] == [("What time is it?", True)]
    stt.send(speech_event(False))
    stt.send(final("What time is it?"))
    record = await s.wait_for(is_kind("latency"), timeout=WAIT)
    assert len(llm.requests) == 1  # the answer ahead stood: no second call
    final_msg = next(m for m in s.of("transcript") if m.transcript.is_final)
    assert record.turn_id == final_msg.turn_id != ""
    assert [m.reply_text.delta for m in s.of("reply_text")] == list(llm.reply)
    assert all(m.turn_id == record.turn_id for m in s.of("reply_audio"))
    at = marks(record.latency)
    assert at["speculative_transcript"] <= at["first_token"] and at["final_transcript"] <= at["first_audio"]
    assert [(e.user, e.assistant) for e in llm.exchanges] == [("What time is it?", ANSWER)]
    await s.close(timeout=WAIT)
    assert s.error is None


async def test_speech_after_the_pause_withdraws_the_answer_ahead_unheard(harness: Harness) -> None:
    stt, llm = harness.fakes.stt, harness.fakes.llm
    llm.hold = asyncio.Event()  # the answer ahead stops after its first piece
    s = harness.session()
    await stt_stream(harness, s)
    stt.send(speech_event(True))
    stt.send(speculative("What time"))
    await until(lambda: bool(llm.requests), llm.called)
    stt.send(resumed())  # the speaker goes on: the answer ahead is cancelled
    async with asyncio.timeout(WAIT):
        await llm.cancelled.wait()
    llm.hold.set()
    stt.send(speech_event(False))
    stt.send(final("What time is it in Paris?"))
    record = await s.wait_for(is_kind("latency"), timeout=WAIT)
    assert [(r.text, r.speculative) for r in llm.requests] == [
        ("What time", True),
        ("What time is it in Paris?", False),
    ]
    assert record.latency.reply_text == ANSWER  # only the real turn's answer was heard, once
    assert "".join(m.reply_text.delta for m in s.of("reply_text")) == ANSWER
    assert not llm.exchanges  # the normal Generate remembers its own exchange
    await s.close(timeout=WAIT)
    assert s.error is None


async def test_a_final_that_says_more_replaces_the_answer_ahead(harness: Harness) -> None:
    """The pause ended the utterance but the final, decoded from more audio, has other words:
    the answer ahead goes unheard and the final is answered."""
    stt, llm = harness.fakes.stt, harness.fakes.llm
    s = harness.session()
    await stt_stream(harness, s)
    stt.send(speech_event(True))
    stt.send(speculative("Turn on the"))
    await until(lambda: bool(llm.requests), llm.called)
    stt.send(speech_event(False))
    stt.send(final("Turn on the lights."))
    record = await s.wait_for(is_kind("latency"), timeout=WAIT)
    assert [r.text for r in llm.requests] == ["Turn on the", "Turn on the lights."]
    assert "".join(m.reply_text.delta for m in s.of("reply_text")) == ANSWER == record.latency.reply_text
    assert len([m for m in s.of("latency")]) == 1
    await s.close(timeout=WAIT)
    assert s.error is None


async def test_no_answer_ahead_when_the_orchestrator_is_told_not_to(harness: Harness) -> None:
    harness.app.settings.preemptive_generation = False
    stt, llm = harness.fakes.stt, harness.fakes.llm
    s = harness.session()
    await started(s)
    async with asyncio.timeout(WAIT):
        await stt.connected.wait()
    assert not stt.configs[-1].speculative_results
    stt.send(speech_event(True))
    stt.send(speculative("What time is it?"))
    stt.send(speech_event(False))
    stt.send(final("What time is it?"))
    await s.wait_for(is_kind("latency"), timeout=WAIT)
    assert [(r.text, r.speculative) for r in llm.requests] == [("What time is it?", False)]
    await s.close(timeout=WAIT)


async def test_no_answer_ahead_while_another_session_is_being_answered(harness: Harness) -> None:
    """The LLM answers one turn at a time: a guess for one session would make another's real
    turn wait, so none is made while any turn is being answered."""
    stt, llm = harness.fakes.stt, harness.fakes.llm
    llm.hold = asyncio.Event()
    busy = harness.session()
    await started(busy)
    busy.send_text("Tell me a long story.")
    await until(lambda: bool(llm.requests), llm.called)
    await until(lambda: len(stt.configs) == 1, stt.connected)
    s = harness.session()
    await started(s)
    await until(lambda: len(stt.configs) == 2, stt.connected)  # the second session's stream
    stt.send(speech_event(True))
    stt.send(speculative("What time is it?"))
    stt.send(speech_event(False))
    stt.send(final("What time is it?"))
    await s.wait_for(final_transcript, timeout=WAIT)
    llm.hold.set()
    await s.wait_for(is_kind("latency"), timeout=WAIT)
    assert [(r.text, r.speculative) for r in llm.requests] == [
        ("Tell me a long story.", False),
        ("What time is it?", False),
    ]
    await s.close(timeout=WAIT)
    await busy.close(timeout=WAIT)


async def test_the_client_ends_the_utterance_in_its_place_among_the_audio(harness: Harness) -> None:
    """Control.end_of_turn reaches the STT stream as end_utterance, after the audio sent
    before it; an empty Control is refused, naming what it may ask."""
    stt = harness.fakes.stt
    s = harness.session()
    await started(s)
    async with asyncio.timeout(WAIT):
        await stt.connected.wait()
    await s.stream_audio(silence(0.5), realtime=False)
    s.end_of_turn()
    await until(lambda: bool(stt.ends_at), stt.audio_arrived)
    assert stt.ends_at == [16000]  # all of the half second first
    s.send(pb.ConverseRequest(control=pb.Control()))
    async with asyncio.timeout(WAIT):
        await s.done.wait()
    assert s.error is not None and s.error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "end_of_turn" in (s.error.details() or "")


FIRST_HALF = "I need the shirts in thirty eight and forty"
SECOND_HALF = "four of each colour."


async def first_half_answered_unheard(harness: Harness, s: Session) -> None:
    """A spoken turn whose answer is being written but not heard yet (a slow voice)."""
    stt, _llm, tts = harness.fakes.stt, harness.fakes.llm, harness.fakes.tts
    tts.hold = asyncio.Event()
    await stt_stream(harness, s)
    stt.send(speech_event(True))
    stt.send(speech_event(False))
    stt.send(final(FIRST_HALF))
    await until(lambda: bool(tts.texts), tts.received)


async def test_words_right_after_a_turn_not_yet_heard_continue_it_as_one_turn(harness: Harness) -> None:
    """The end-of-turn model took a pause inside the sentence for its end: the speaker goes on
    before any of the answer was heard. That answer is dropped unheard and the whole sentence
    is answered once; the LLM remembers only the whole exchange."""
    stt, llm, tts = harness.fakes.stt, harness.fakes.llm, harness.fakes.tts
    s = harness.session()
    await first_half_answered_unheard(harness, s)
    first = await s.wait_for(final_transcript, timeout=WAIT)
    stt.send(speech_event(True))  # the rest of the sentence
    stt.send(speech_event(False))
    stt.send(final(SECOND_HALF))
    cut = await s.wait_for(of_turn("latency", first.turn_id), timeout=WAIT)
    assert cut.latency.interrupted
    assert tts.hold is not None
    tts.hold.set()
    whole = f"{FIRST_HALF} {SECOND_HALF}"
    record = await s.wait_for(lambda m: is_kind("latency")(m) and m.turn_id != first.turn_id, timeout=WAIT)
    await s.close(timeout=WAIT)
    assert s.error is None
    assert [r.text for r in llm.requests] == [FIRST_HALF, whole]
    finals = [m for m in s.of("transcript") if m.transcript.is_final]
    assert [m.transcript.text for m in finals] == [FIRST_HALF, whole]
    assert finals[1].turn_id == record.turn_id and record.latency.reply_text == ANSWER
    heard = [m for m in s.of("reply_audio") if m.reply_audio.audio]
    assert heard and {m.turn_id for m in heard} == {record.turn_id}  # nothing of the first was heard
    assert not [m for m in s.of("stop_playback")]  # nothing was playing to stop
    assert not [e for e in llm.exchanges if e.user == FIRST_HALF]  # the first half is not recorded


async def test_noise_right_after_a_turn_releases_its_held_answer(harness: Harness) -> None:
    """Speech that resumes but holds no words (a cough): the answer held meanwhile goes out."""
    stt, llm, tts = harness.fakes.stt, harness.fakes.llm, harness.fakes.tts
    s = harness.session()
    await first_half_answered_unheard(harness, s)
    stt.send(speech_event(True))
    assert tts.hold is not None
    tts.hold.set()  # the answer is ready while held: nothing of it goes out yet
    await until(lambda: len(tts.texts) == len(llm.reply), tts.spoke)
    await s.wait_for(is_kind("speech"), timeout=WAIT)
    assert not s.of("reply_audio")
    stt.send(speech_event(False))
    stt.send(final(" . . ."))
    record = await s.wait_for(is_kind("latency"), timeout=WAIT)
    await s.close(timeout=WAIT)
    assert s.error is None
    assert not record.latency.interrupted and record.latency.reply_text == ANSWER
    assert [r.text for r in llm.requests] == [FIRST_HALF]
    assert len([m for m in s.of("reply_audio") if m.reply_audio.audio]) == len(llm.reply)


async def test_speech_after_the_answer_was_heard_is_a_new_turn(harness: Harness) -> None:
    stt, llm = harness.fakes.stt, harness.fakes.llm
    s = harness.session()
    await stt_stream(harness, s)
    stt.send(speech_event(True))
    stt.send(speech_event(False))
    stt.send(final(FIRST_HALF))
    first = await s.wait_for(is_kind("latency"), timeout=WAIT)
    stt.send(speech_event(True))
    stt.send(speech_event(False))
    stt.send(final(SECOND_HALF))
    await s.wait_for(lambda m: is_kind("latency")(m) and m.turn_id != first.turn_id, timeout=WAIT)
    await s.close(timeout=WAIT)
    assert [r.text for r in llm.requests] == [FIRST_HALF, SECOND_HALF]
    assert not first.latency.interrupted


async def test_no_continuation_when_the_orchestrator_is_told_not_to(harness: Harness) -> None:
    harness.app.settings.continuation_seconds = 0
    stt, llm, tts = harness.fakes.stt, harness.fakes.llm, harness.fakes.tts
    s = harness.session()
    await first_half_answered_unheard(harness, s)
    stt.send(speech_event(True))
    stt.send(speech_event(False))
    stt.send(final(SECOND_HALF))
    assert tts.hold is not None
    tts.hold.set()
    first = await s.wait_for(is_kind("latency"), timeout=WAIT)
    await s.wait_for(lambda m: is_kind("latency")(m) and m.turn_id != first.turn_id, timeout=WAIT)
    await s.close(timeout=WAIT)
    assert [r.text for r in llm.requests] == [FIRST_HALF, SECOND_HALF]
    assert not first.latency.interrupted


async def test_a_final_that_comes_after_its_speaker_went_on_waits_for_the_rest(harness: Harness) -> None:
    """The speaker resumed before the first part's final came (its decode outlasted their
    pause): that final is not answered alone; the next one is answered with all the words."""
    stt, llm = harness.fakes.stt, harness.fakes.llm
    s = harness.session()
    await stt_stream(harness, s)
    for event in (speech_event(True), speech_event(False), speech_event(True), final(FIRST_HALF)):
        stt.send(event)
    await s.wait_for(final_transcript, timeout=WAIT)
    stt.send(speech_event(False))
    stt.send(final(SECOND_HALF))
    record = await s.wait_for(is_kind("latency"), timeout=WAIT)
    await s.close(timeout=WAIT)
    whole = f"{FIRST_HALF} {SECOND_HALF}"
    assert [r.text for r in llm.requests] == [whole]
    assert [m.transcript.text for m in s.of("transcript") if m.transcript.is_final] == [FIRST_HALF, whole]
    assert not record.latency.interrupted and len(s.of("latency")) == 1


async def test_a_final_kept_back_for_noise_is_answered_when_the_noise_ends(harness: Harness) -> None:
    stt, llm = harness.fakes.stt, harness.fakes.llm
    s = harness.session()
    await stt_stream(harness, s)
    for event in (speech_event(True), speech_event(False), speech_event(True), final(FIRST_HALF)):
        stt.send(event)
    await s.wait_for(final_transcript, timeout=WAIT)
    assert not llm.requests
    stt.send(speech_event(False))
    stt.send(final(""))
    record = await s.wait_for(is_kind("latency"), timeout=WAIT)
    await s.close(timeout=WAIT)
    assert [r.text for r in llm.requests] == [FIRST_HALF] and record.latency.reply_text == ANSWER
