"""What a stream's client may ask beyond transcripts: speculative results (a pause's transcript
sent before the end of the turn is decided, withdrawn with SPEECH_RESUMED when the speaker goes
on; the orchestrator answers early on it), and ending an utterance itself."""

from __future__ import annotations

import time

from client.demo import DEMO_DIR
from parole.stt.v1 import stt_pb2
from services.runtime.audio import read_wav, silence
from services.testkit.stt import paced_requests
from services.testkit.transcripts import normalise
from tests.stt.conftest import Served, collect, config, stream_requests

SILENCE = stt_pb2.ENDPOINTING_MODE_SILENCE


async def test_a_pause_sends_its_transcript_early_and_speech_after_it_withdraws_it(stt: Served) -> None:
    """Silence-only endpointing with a 2 s end, so every pause below it is one the speaker
    may go on from: each gets a speculative transcript at 160 ms of silence; going on withdraws
    it; the last one, which ends the utterance, says what the final says. Paced at real time,
    the pauses long enough for the decode to finish inside them on a loaded host."""
    # Two bundled questions (fixed audio, heard the same way every run) with a pause between.
    first, rest = read_wav(DEMO_DIR / "en-capital-france.wav"), read_wav(DEMO_DIR / "en-days-week.wav")
    audio = silence(0.3) + first.data + silence(1.2) + rest.data + silence(2.6)
    cfg = config(language="en", speculative_results=True, endpointing=SILENCE, end_of_speech_silence_ms=2000)
    marks: dict[str, float] = {}
    events: list[tuple[float, stt_pb2.StreamingRecognizeResponse]] = []
    call = stt.stub.StreamingRecognize(paced_requests(cfg, audio, 0.0, marks))
    async for response in call:
        events.append((time.perf_counter(), response))
    kinds = [
        "speculative"
        if r.result.speculative
        else "final"
        if r.result.is_final
        else "interim"
        if r.HasField("result")
        else stt_pb2.SpeechEventType.Name(r.speech_event)
        for _, r in events
    ]
    assert "interim" not in kinds  # no interims asked for
    assert kinds.count("final") == 1, kinds
    assert kinds.count("SPEECH_EVENT_TYPE_SPEECH_RESUMED") == 1, kinds
    # speculative → resumed (the speaker went on) → speculative → ended → final
    resumed = kinds.index("SPEECH_EVENT_TYPE_SPEECH_RESUMED")
    assert "speculative" in kinds[:resumed], kinds
    assert kinds[resumed + 1 :].count("speculative") == 1, kinds
    results = [r.result for _, r in events if r.HasField("result")]
    early, last, final = results[0], results[-2], results[-1]
    assert {"capital", "france"} <= set(normalise(early.transcript)) and "week" not in normalise(early.transcript)
    assert last.speculative and not last.is_final and last.transcript == final.transcript
    assert {"capital", "france", "week"} <= set(normalise(final.transcript))
    # The early transcript came while the speaker was pausing, long before the end.
    final_at = next(t for t, r in events if r.result.is_final)
    early_at = next(t for t, r in events if r.result.speculative)
    assert final_at - early_at > 1.5
    assert abs(last.end_seconds - final.end_seconds) < 1e-6


async def test_no_speculative_results_unless_asked(stt: Served) -> None:
    phrase = read_wav(DEMO_DIR / "en-two-plus-three.wav")
    cfg = config(language="en", endpointing=SILENCE, end_of_speech_silence_ms=1200)
    responses = [r async for r in stt.stub.StreamingRecognize(paced_requests(cfg, phrase.data + silence(1.6), 0.0, {}))]
    assert not any(r.result.speculative for r in responses)
    assert not any(r.speech_event == stt_pb2.SPEECH_EVENT_TYPE_SPEECH_RESUMED for r in responses)
    assert [r.result.is_final for r in responses if r.HasField("result")] == [True]


async def test_the_client_can_end_an_utterance_at_once(stt: Served) -> None:
    """end_utterance ends the utterance in progress without waiting for any silence (a
    push-to-talk release, a Realtime commit); the stream goes on to hear the next one."""
    one, two = read_wav(DEMO_DIR / "en-capital-france.wav"), read_wav(DEMO_DIR / "en-two-plus-three.wav")
    end = stt_pb2.StreamingRecognizeRequest(end_utterance=stt_pb2.EndUtterance())
    requests = [
        *stream_requests(config(language="en"), silence(0.3) + one.data),
        end,
        end,  # between utterances: nothing to end
        *stream_requests(None, silence(0.3) + two.data),
        end,
    ]
    responses = await collect(stt.stub, requests)
    finals = [r.result for r in responses if r.result.is_final]
    assert [f.end_of_turn.reason for f in finals] == [stt_pb2.END_OF_TURN_REASON_CLIENT] * 2
    assert {"capital", "france"} <= set(normalise(finals[0].transcript))
    assert {"plus"} <= set(normalise(finals[1].transcript))
