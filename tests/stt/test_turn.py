"""Semantic end of turn: the features, the Smart Turn model and the endpointing policy, on
real recordings (shared/speech/turns, skipped when absent) with the real models."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import structlog
from faster_whisper.feature_extractor import FeatureExtractor
from prometheus_client import REGISTRY

from bench.common import questions
from parole.stt.v1 import stt_pb2
from services.models.store import ModelError, ModelStore
from services.runtime.audio import FloatAudio, Pcm, pcm16_to_float, read_wav, resample_pcm16, silence
from services.runtime.server import start_app
from services.stt.app import SttApp
from services.stt.config import StreamingSettings, SttSettings, TurnSettings
from services.stt.engine import SileroVad, WhisperEngine
from services.stt.streaming import WINDOW, CheckTurn, Endpointer, EndpointEvent, Paused, SpeechEnded
from services.stt.turn import SAMPLES, SmartTurn, TurnVerdict, features, mel_filters
from services.testkit.speech import piper_joe, trim
from services.testkit.stt import loopback_settings, paced_requests
from services.testkit.transcripts import normalise
from tests.stt.conftest import Served, collect, config, serve, shutdown, stream_requests

REASON = stt_pb2.EndOfTurnReason
MODE = stt_pb2.EndpointingMode
LEAD, TAIL = 0.3, 2.5


# ----------------------------------------------------------------------------- recordings


@dataclass(frozen=True)
class TurnClip:
    """One turn of one speaker: ``paused`` (pauses inside it) or ``complete`` (a short command)."""

    name: str
    language: str
    kind: str
    transcript: str
    pcm: Pcm
    pauses: tuple[tuple[float, float], ...]

    @property
    def audio(self) -> FloatAudio:
        """The turn with silence before it and after it (past the longest pause waited)."""
        return pcm16_to_float(silence(LEAD) + self.pcm.data + silence(TAIL))


@pytest.fixture(scope="session")
def turn_clips(speech_dir: Path) -> list[TurnClip]:
    folder = speech_dir / "turns"
    if not (folder / "manifest.tsv").is_file():
        pytest.skip(f"no turn-taking recordings at {folder}")
    clips = []
    with (folder / "manifest.tsv").open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            pcm = read_wav(folder / row["file"])
            pauses = tuple(
                (float(a), float(b)) for a, b in (p.split("-") for p in row["inner_pauses"].split(",") if p.strip())
            )
            clips.append(
                TurnClip(
                    Path(row["file"]).stem,
                    row["language"],
                    row["kind"],
                    row["transcript"],
                    Pcm(resample_pcm16(pcm.data, pcm.sample_rate, 16000), 16000),
                    pauses,
                )
            )
    assert {c.kind for c in clips} == {"paused", "complete"}
    return clips


def of_kind(clips: list[TurnClip], kind: str) -> list[TurnClip]:
    return [c for c in clips if c.kind == kind]


def words_heard(reference: str, heard: str) -> float:
    """Share of the reference's words (annotation marks dropped) found in what was heard."""
    ref = {w for w in normalise(reference) if w not in ("euh", "+", "*")}
    return len(ref & set(normalise(heard))) / max(1, len(ref))


# ----------------------------------------------------------------------------- features


def test_features_are_pinned_to_the_reference_values() -> None:
    """Values computed once by the reference implementation (pipecat's vendored copy of
    transformers' WhisperFeatureExtractor, in float64; ours runs in float32) for 3 s of a
    440 Hz tone and a chirp, left-padded to 8 s."""
    t = np.arange(3 * 16000) / 16000
    signal = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.25 * np.sin(2 * np.pi * (300 + 700 * t) * t)).astype(np.float32)
    got = features(signal)
    assert got.shape == (80, 800) and got.dtype == np.float32
    pinned = {
        (0, 799): 0.7831666469573975,
        (9, 684): 1.4668827056884766,
        (10, 723): 1.6562296152114868,
        (11, 631): 1.7456949949264526,
        (50, 637): 0.07017654925584793,
        (50, 672): 0.5336825251579285,
        (30, 750): -0.1668231189250946,  # the floor: 8 below the maximum, scaled
    }
    for (mel, frame), value in pinned.items():
        assert got[mel, frame] == pytest.approx(value, abs=2e-5), (mel, frame)
    assert float(got.max()) == pytest.approx(1.833176851272583, abs=2e-5)
    assert float(got.mean()) == pytest.approx(-0.09673478454351425, abs=2e-5)


def test_features_match_faster_whispers_extractor_and_its_definition() -> None:
    """faster-whisper's own extractor (float32, written independently) on the same normalised,
    left-padded buffer agrees; and the properties that define the input hold."""
    rng = np.random.default_rng(0)
    speechy = (0.2 * rng.standard_normal(5 * 16000)).astype(np.float32)
    padded = np.concatenate([np.zeros(SAMPLES - speechy.size, np.float32), speechy])
    normalised = (padded - padded.mean()) / np.sqrt(padded.var() + 1e-7)
    theirs = FeatureExtractor(80, chunk_length=8)(normalised, padding=0)
    assert theirs.shape == (80, 800)
    assert np.abs(features(speechy) - theirs).max() < 1e-4
    # Only the last 8 s count; the level does not (the waveform is normalised).
    longer = np.concatenate([rng.standard_normal(16000).astype(np.float32), padded])
    np.testing.assert_allclose(features(longer), features(padded), atol=1e-5)
    np.testing.assert_allclose(features(3 * speechy), features(speechy), atol=1e-4)
    # Zero padding on the left: normalised with the rest it is a constant, so its frames are
    # all alike (3 s of them here), unlike the speech's.
    got = features(speechy)
    assert np.ptp(got[:, :250], axis=1).max() < 1e-5 and np.ptp(got[:, -400:], axis=1).min() > 0.1
    # A 1 kHz tone peaks in the mel band whose filter weighs 1 kHz most (Slaney: 1 kHz is
    # where the scale turns logarithmic, mel 15).
    t = np.arange(16000) / 16000
    tone = features((0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    band = int(np.argmax(tone[:, -50:].mean(axis=1)))
    assert band == int(np.argmax(mel_filters()[:, 1000 // 40]))
    assert mel_filters().shape == (80, 201)


# ----------------------------------------------------------------------------- the model


def test_the_model_hears_complete_commands_as_complete(smart_turn: SmartTurn, turn_clips: list[TurnClip]) -> None:
    """The recorded commands, followed by the silence at which the model is asked, are judged
    complete (Smart Turn's own threshold, 0.5): every one on the AVX-512 host; on an AVX2 one
    the model's arithmetic puts one French command just under (0.46), so one may fall short,
    and none far (a command judged unfinished waits the long silence, 2 s, not forever)."""
    commands = of_kind(turn_clips, "complete")
    probabilities = {
        clip.name: smart_turn.probability(pcm16_to_float(silence(0.1) + clip.pcm.data + silence(0.16)))
        for clip in commands
    }
    short = {name: p for name, p in probabilities.items() if p <= 0.5}
    assert len(short) <= 1 and all(p > 0.4 for p in short.values()), short


# ----------------------------------------------------------------------------- the policy


Answer = Callable[[CheckTurn], float | None]


def drive(
    ep: Endpointer,
    audio: FloatAudio,
    answer: Answer | None,
    chunk: int = 1600,
    transcript_after: int | None = None,
    unfinished: bool = False,
) -> list[EndpointEvent]:
    """Feeds ``audio`` in chunks; answers each CheckTurn at once; reports each pause's
    transcript ready ``transcript_after`` windows after the pause (None: never), its text
    reading as ``unfinished`` or not."""
    events: list[EndpointEvent] = []
    ready: list[tuple[int, int]] = []  # (stream sample at which to report, pause end sample)

    def handle(new: list[EndpointEvent]) -> None:
        for e in new:
            events.append(e)
            if isinstance(e, CheckTurn) and answer is not None:
                handle(ep.verdict(e.check, answer(e)))
            if isinstance(e, Paused) and transcript_after is not None:
                ready.append((e.end_sample + transcript_after * WINDOW, e.end_sample))

    for i in range(0, audio.size, chunk):
        handle(ep.feed(audio[i : i + chunk]))
        while ready and ready[0][0] <= i + chunk:
            handle(ep.transcript_ready(ready.pop(0)[1], unfinished))
    handle(ep.flush())
    return events


def ends(events: list[EndpointEvent]) -> list[SpeechEnded]:
    return [e for e in events if isinstance(e, SpeechEnded)]


def semantic(hold_ms: int = 0) -> StreamingSettings:
    return StreamingSettings(turn=TurnSettings(hold_for_transcript_ms=hold_ms))


def ask(model: SmartTurn) -> Answer:
    return lambda check: model.probability(check.audio)


def test_complete_commands_end_at_the_short_silence(smart_turn: SmartTurn, turn_clips: list[TurnClip]) -> None:
    settings = semantic()
    complete = settings.turn.complete_silence_ms
    for clip in of_kind(turn_clips, "complete"):
        ep = Endpointer(SileroVad(), settings, semantic=True)
        (ended,) = ends(drive(ep, clip.audio, ask(smart_turn)))
        assert ended.reason == "complete" and ended.mode == "semantic", clip.name
        assert ended.probability is not None and ended.probability >= 0.5 and ended.checks == 1
        # The configured silence, rounded up to whole 32 ms VAD windows.
        assert ended.silence_samples == ep.complete_windows * WINDOW
        assert complete / 1000 <= ended.silence_samples / 16000 < complete / 1000 + 0.032
        assert ended.at_sample == ended.decided_sample  # no hold asked


def test_paused_turns_end_only_where_the_model_hears_an_ending(
    smart_turn: SmartTurn, turn_clips: list[TurnClip]
) -> None:
    """On every paused clip: a turn ends inside the clip only where the model judged it
    complete, never on silence alone (every inner pause is far below the 2 s maximum), and
    across the set semantic endpointing cuts fewer speakers off than silence alone at the same
    wait (complete_silence_ms): what the model adds."""
    splits = {"semantic": 0, "silence": 0}
    wait = semantic().turn.complete_silence_ms
    for clip in of_kind(turn_clips, "paused"):
        for mode in splits:
            ep = Endpointer(SileroVad(), semantic(), wait, semantic=mode == "semantic")
            got = ends(drive(ep, clip.audio, ask(smart_turn)))
            assert got, clip.name
            inner, last = got[:-1], got[-1]
            splits[mode] += bool(inner)
            if mode == "semantic":
                for e in inner:
                    assert e.reason == "complete" and e.probability is not None and e.probability >= 0.5, (clip.name, e)
            # The last utterance runs to the end of the speech.
            assert last.voice_end_sample / 16000 > LEAD + clip.pcm.duration - 0.3, clip.name
    assert splits["semantic"] < splits["silence"], splits


def test_holding_for_the_transcript_keeps_a_speaker_who_goes_on(
    smart_turn: SmartTurn, turn_clips: list[TurnClip]
) -> None:
    """A turn judged complete is held until its pause's transcript is ready (at most 500 ms
    more): a speaker who goes on meanwhile is not cut off. Without a transcript the bound
    applies; with one, the end comes when it is ready."""
    paused = of_kind(turn_clips, "paused")
    total = {0: 0, 500: 0}
    for clip in paused:
        for hold in total:
            ep = Endpointer(SileroVad(), semantic(hold), semantic=True)
            total[hold] += len(ends(drive(ep, clip.audio, ask(smart_turn))))
    assert total[500] < total[0], total
    command = of_kind(turn_clips, "complete")[0]
    ep = Endpointer(SileroVad(), semantic(500), semantic=True)
    (never,) = ends(drive(ep, command.audio, ask(smart_turn)))
    assert never.reason == "complete" and never.held_samples == ep.hold_windows * WINDOW
    ep = Endpointer(SileroVad(), semantic(500), semantic=True)
    (soon,) = ends(drive(ep, command.audio, ask(smart_turn), chunk=512, transcript_after=4))
    # Decided at 7 windows of silence; the transcript is ready 4 windows after the pause (5),
    # at 9: held 2 windows.
    assert soon.reason == "complete" and soon.held_samples == 2 * WINDOW
    assert soon.silence_samples == never.silence_samples


def test_a_transcript_that_breaks_off_overrules_a_complete(smart_turn: SmartTurn, turn_clips: list[TurnClip]) -> None:
    """A turn the model judged complete, whose pause's transcript reads as unfinished ("…sur
    les rails et si…"), is not ended: it waits for the longest pause, says it was overruled,
    and a transcript that reads as finished ends it as before. The text overrules whether it
    comes before the model's answer is applied or during the hold."""
    command = of_kind(turn_clips, "complete")[0]
    for after in (1, 4):  # ready before the decision (7 windows of silence), or held for
        ep = Endpointer(SileroVad(), semantic(500), semantic=True)
        (ended,) = ends(drive(ep, command.audio, ask(smart_turn), chunk=512, transcript_after=after, unfinished=True))
        assert ended.reason == "max_silence" and ended.overruled, (after, ended)
        assert ended.probability is not None and ended.probability >= 0.5
        assert ended.silence_samples == ep.max_silence_windows * WINDOW
        ep = Endpointer(SileroVad(), semantic(500), semantic=True)
        (kept,) = ends(drive(ep, command.audio, ask(smart_turn), chunk=512, transcript_after=after))
        assert kept.reason == "complete" and not kept.overruled
    # The model's "unfinished" is not an overrule: nothing was overruled.
    ep = Endpointer(SileroVad(), semantic(500), semantic=True)
    (unjudged,) = ends(drive(ep, command.audio, lambda check: 0.1, chunk=512, transcript_after=1, unfinished=True))
    assert unjudged.reason == "max_silence" and not unjudged.overruled


def test_answers_apply_where_they_were_asked_whatever_their_delay(
    smart_turn: SmartTurn, turn_clips: list[TurnClip]
) -> None:
    """The endpointer waits for each answer before judging the silence after it, so answering
    late (a slow model, a stream sent faster than real time) changes no event."""
    clip = max(of_kind(turn_clips, "paused"), key=lambda c: len(c.pauses))
    at_once = drive(Endpointer(SileroVad(), semantic(), semantic=True), clip.audio, ask(smart_turn))
    # The whole clip arrives before the first answer: each question is answered only once
    # the endpointer has stopped, waiting for it.
    ep = Endpointer(SileroVad(), semantic(), semantic=True)
    late = list(ep.feed(clip.audio))
    while ep.waiting:
        assert ep.feed(np.zeros(0, np.float32)) == []  # nothing is judged meanwhile
        question = next(e for e in late if isinstance(e, CheckTurn) and e.check == ep.pending_check)
        late += ep.verdict(question.check, smart_turn.probability(question.audio))
    late += ep.flush()

    def shape(events: list[EndpointEvent]) -> list[tuple[str, int]]:
        return [(type(e).__name__, getattr(e, "at_sample", getattr(e, "end_sample", -1))) for e in events]

    assert shape(late) == shape(at_once)
    assert any(isinstance(e, CheckTurn) for e in at_once)


def test_an_unanswered_pause_falls_back_to_the_silence_rule(turn_clips: list[TurnClip]) -> None:
    """No answer (the model failed or was late): that pause ends on end_of_speech_silence_ms."""
    command = of_kind(turn_clips, "complete")[0]
    ep = Endpointer(SileroVad(), semantic(), 300, semantic=True)
    (ended,) = ends(drive(ep, command.audio, lambda check: None))
    assert ended.reason == "silence" and ended.probability is None
    assert ended.silence_samples == ep.eos_windows * WINDOW


def test_the_longest_pause_ends_a_turn_judged_unfinished(turn_clips: list[TurnClip]) -> None:
    command = of_kind(turn_clips, "complete")[0]
    ep = Endpointer(SileroVad(), semantic(), semantic=True)
    (ended,) = ends(drive(ep, command.audio, lambda check: 0.1))
    assert ended.reason == "max_silence" and ended.probability == pytest.approx(0.1)
    assert ended.silence_samples == ep.max_silence_windows * WINDOW


# ----------------------------------------------------------------------------- the service


def final_results(responses: list[stt_pb2.StreamingRecognizeResponse]) -> list[stt_pb2.RecognitionResult]:
    return [r.result for r in responses if r.HasField("result") and r.result.is_final]


async def test_complete_commands_through_the_service(stt: Served, turn_clips: list[TurnClip]) -> None:
    """Each command: one final with its words, ended because the model judged it complete at
    the configured short silence, held at most 500 ms for its transcript."""
    for clip in of_kind(turn_clips, "complete"):
        responses = await collect(
            stt.stub, stream_requests(config(language=clip.language), silence(LEAD) + clip.pcm.data + silence(1.5))
        )
        (final,) = final_results(responses)
        eot = final.end_of_turn
        assert (eot.mode, eot.reason) == (MODE.ENDPOINTING_MODE_SEMANTIC, REASON.END_OF_TURN_REASON_COMPLETE), clip.name
        assert eot.HasField("probability") and eot.probability >= 0.5 and eot.checks == 1
        assert 0.2 <= eot.silence_seconds < 0.232 and eot.held_seconds <= 0.5 + 0.032
        assert 0 < eot.decision_cpu_seconds < 2 and eot.decision_wall_seconds > 0
        # The whole command, not a part: the final runs to the end of the speech and holds about
        # as many words (Whisper base writes "5" for "cinq" or "minute" for "minuteur" as it likes).
        assert final.end_seconds > LEAD + clip.pcm.duration - 0.3, (clip.name, final.end_seconds)
        assert len(normalise(final.transcript)) >= 0.6 * len(normalise(clip.transcript)), (clip.name, final.transcript)


async def test_paused_clips_through_the_service(stt: Served, turn_clips: list[TurnClip]) -> None:
    """Each paused clip: its finals together hold its text and run to its end; where it was
    split, the model had judged the part before the pause complete."""
    report = []
    for clip in of_kind(turn_clips, "paused"):
        audio = silence(LEAD) + clip.pcm.data + silence(TAIL)
        finals = final_results(await collect(stt.stub, stream_requests(config(language=clip.language), audio)))
        heard = " ".join(f.transcript for f in finals)
        report.append((clip.name, len(finals), round(words_heard(clip.transcript, heard), 2), heard))
        assert finals[-1].end_seconds > LEAD + clip.pcm.duration - 0.3, report[-1]
        for f in finals[:-1]:
            eot = f.end_of_turn
            assert eot.reason == REASON.END_OF_TURN_REASON_COMPLETE and eot.probability >= 0.5, (clip.name, eot)
    # Whisper base on spontaneous French misses words either way: half of them, on every clip.
    assert all(share >= 0.5 for _, _, share, _ in report), report


class HearsEveryPauseAsFinal:
    """Fault injection: an end-of-turn model that judges every pause complete (what Smart Turn
    does at some real mid-sentence pauses: "…sur les rails et si…" at 0.97)."""

    name = "always-complete"

    async def decide(self, audio: FloatAudio) -> TurnVerdict:
        return TurnVerdict(probability=0.99, cpu_seconds=0.0, wall_seconds=0.0)


async def test_a_sentence_left_hanging_is_not_ended_by_a_final_sounding_pause(
    whisper_engine: WhisperEngine, model_store: ModelStore
) -> None:
    """Real Whisper, real time, a model that hears every pause as final: the pause after "I
    need eggs, milk and" is transcribed ending on "and", so the turn goes on listening and
    the speaker who finishes the list 3 s later is heard in one final (the overrule counted).
    With the text check off, the same stream is cut at that pause. The hold and the longest
    pause are long here so that a loaded host's slow decode still lands inside them."""
    turn = TurnSettings(hold_for_transcript_ms=3000, max_silence_ms=4000)
    first, rest = (trim(piper_joe(t, model_store)) for t in ("I need eggs, milk and", "a loaf of bread."))
    audio = silence(LEAD) + first.data + silence(3.0) + rest.data + silence(TAIL)
    finals = {}
    for veto in (True, False):
        settings = loopback_settings(streaming=StreamingSettings(turn=turn.model_copy(update={"text_veto": veto})))
        served = await serve(settings, [whisper_engine], HearsEveryPauseAsFinal())
        try:
            before = metric("parole_stt_turn_overruled_total")
            requests = paced_requests(config(language="en"), audio, LEAD + 5, {})
            finals[veto] = final_results([r async for r in served.stub.StreamingRecognize(requests)])
            overruled = metric("parole_stt_turn_overruled_total") - before
        finally:
            await shutdown(served)
        if veto:
            assert len(finals[veto]) == 1, [f.transcript for f in finals[veto]]
            assert {"eggs", "milk", "bread"} <= set(normalise(finals[veto][0].transcript)), finals[veto][0].transcript
            assert overruled >= 1
        else:
            assert len(finals[veto]) == 2 and overruled == 0, [f.transcript for f in finals[veto]]
            assert "bread" in normalise(finals[veto][1].transcript)


async def test_silence_only_endpointing_per_stream(stt: Served, turn_clips: list[TurnClip]) -> None:
    clip = of_kind(turn_clips, "complete")[0]
    cfg = config(language=clip.language, endpointing=stt_pb2.ENDPOINTING_MODE_SILENCE, end_of_speech_silence_ms=400)
    (final,) = final_results(
        await collect(stt.stub, stream_requests(cfg, silence(LEAD) + clip.pcm.data + silence(1.0)))
    )
    eot = final.end_of_turn
    assert (eot.mode, eot.reason, eot.checks) == (MODE.ENDPOINTING_MODE_SILENCE, REASON.END_OF_TURN_REASON_SILENCE, 0)
    assert not eot.HasField("probability") and 0.4 <= eot.silence_seconds < 0.432


async def test_an_unknown_endpointing_mode_is_refused(stt: Served) -> None:
    call = stt.stub.StreamingRecognize(iter([stt_pb2.StreamingRecognizeRequest(config=config(endpointing=7))]))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        [r async for r in call]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "endpointing" in (info.value.details() or "")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_without_the_model_file_streams_fall_back_to_silence_and_say_why(
    tmp_path: Path, model_store: ModelStore, turn_clips: list[TurnClip]
) -> None:
    """A model cache without the end-of-turn model (Whisper present): the service starts, warns
    with the missing file and the command that provides it, reports the model unavailable, and
    ends each utterance on silence, counted as a fallback."""
    (tmp_path / "whisper").mkdir()
    (tmp_path / "whisper" / "whisper-base").symlink_to(model_store.whisper("whisper-base"))
    with pytest.raises(ModelError, match=r"assemble smart-turn-v3\.2"):
        ModelStore(tmp_path).turn_model()
    settings = loopback_settings(model_dir=tmp_path)
    with structlog.testing.capture_logs() as logs:
        app = SttApp.from_settings(settings)
    (warning,) = [entry for entry in logs if entry["log_level"] == "warning"]
    expected = tmp_path / "turn" / "smart-turn-v3.2-cpu.onnx"
    assert warning["file"] == str(expected) and "python -m services.models assemble smart-turn-v3.2" in warning["fix"]
    assert app.turn is None and metric("parole_stt_turn_model_available") == 0
    running = await start_app(app, settings.server)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            from parole.stt.v1 import stt_pb2_grpc

            stub = stt_pb2_grpc.SttServiceStub(channel)
            before = metric("parole_stt_turn_fallbacks_total", reason="model_missing")
            clip = of_kind(turn_clips, "complete")[0]
            responses = await collect(
                stub, stream_requests(config(language=clip.language), silence(LEAD) + clip.pcm.data + silence(1.0))
            )
            (final,) = final_results(responses)
            eot = final.end_of_turn
            assert (eot.mode, eot.reason) == (MODE.ENDPOINTING_MODE_SILENCE, REASON.END_OF_TURN_REASON_SILENCE)
            assert 0.3 <= eot.silence_seconds < 0.332 and words_heard(clip.transcript, final.transcript) >= 0.5
            assert metric("parole_stt_turn_fallbacks_total", reason="model_missing") == before + 1
    finally:
        await running.stop(0)
        await app.close()


class BrokenTurn:
    """Fault injection: an end-of-turn model that fails, or answers after ``delay`` seconds."""

    name = "broken"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    async def decide(self, audio: FloatAudio) -> TurnVerdict:
        if self.delay:
            await asyncio.sleep(self.delay)
            return TurnVerdict(0.99, 0.0, self.delay)
        raise RuntimeError("injected end-of-turn failure")


@pytest.mark.parametrize(("delay", "reason"), [(0.0, "error"), (0.5, "timeout")])
async def test_a_failing_or_late_model_leaves_the_pause_to_silence(
    whisper_engine: WhisperEngine, turn_clips: list[TurnClip], delay: float, reason: str
) -> None:
    settings = loopback_settings(streaming=StreamingSettings(turn=TurnSettings(decision_timeout_ms=200)))
    served = await serve(settings, [whisper_engine], BrokenTurn(delay))
    try:
        before = metric("parole_stt_turn_fallbacks_total", reason=reason)
        clip = of_kind(turn_clips, "complete")[0]
        cfg = config(language=clip.language)
        (final,) = final_results(
            await collect(served.stub, stream_requests(cfg, silence(LEAD) + clip.pcm.data + silence(1.0)))
        )
        eot = final.end_of_turn
        assert (eot.mode, eot.reason) == (MODE.ENDPOINTING_MODE_SEMANTIC, REASON.END_OF_TURN_REASON_SILENCE)
        assert 0.3 <= eot.silence_seconds < 0.332 and final.transcript
        assert metric("parole_stt_turn_fallbacks_total", reason=reason) == before + 1
    finally:
        await shutdown(served)


def test_turn_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="complete_silence_ms"):
        TurnSettings(complete_silence_ms=2000, max_silence_ms=1000)
    with pytest.raises(ValueError, match="speculative_pause_ms"):
        StreamingSettings(speculative_pause_ms=1000, turn=TurnSettings(max_silence_ms=800, complete_silence_ms=300))
    assert SttSettings().streaming.turn.mode == "semantic"


def test_a_short_question_after_a_turn_and_its_silence_is_heard(smart_turn: SmartTurn) -> None:
    """A real 1-second "What time is it?" spoken after "What's the weather like in New York?"
    and the 4 s of silence a client streams while it waits for the answer: Silero's state
    after that heard it at no more than 0.62 and it was lost (bench.load lost it in every run).
    From the state a stream starts with, it is heard. Without the reset it fails."""
    by_name = {q.name: q.pcm for q in questions()}
    first = next(pcm for name, pcm in by_name.items() if name.endswith("what_s_the_weather_like_in_new_york.wav"))
    then = next(pcm for name, pcm in by_name.items() if name.endswith("what_time_is_it.wav"))
    audio = pcm16_to_float(first.data + silence(4.0) + then.data + silence(4.0))
    for reset_ms, heard in ((StreamingSettings().vad_reset_ms, 2), (0, 1)):
        ep = Endpointer(SileroVad(), StreamingSettings(vad_reset_ms=reset_ms), semantic=True)
        got = ends(drive(ep, audio, ask(smart_turn), transcript_after=3))
        assert len(got) == heard, (reset_ms, [(e.reason, e.end_sample / 16000) for e in got])
