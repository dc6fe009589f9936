"""The ``wyoming`` package's client against the gateway's Wyoming servers (what Home Assistant
uses): describe, transcribe a real recording (with the streaming transcript events) and
synthesise speech (whole and streamed), read back by the ASR server."""

from __future__ import annotations

import time
from pathlib import Path

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice

from services.runtime.audio import Pcm, chunks, read_wav
from tests.gateway.harness import SENTENCE, VOICE, GatewayFleet, word_errors, words

DEMO = Path(__file__).resolve().parents[2] / "client" / "demo"


async def read_until(client: AsyncTcpClient, kind: str, within: float = 60) -> list[Event]:
    events: list[Event] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        event = await client.read_event()
        assert event is not None, f"connection closed; got {[e.type for e in events]}"
        events.append(event)
        if event.type == kind:
            return events
    raise AssertionError(f"no {kind} within {within} s; got {[e.type for e in events]}")


async def transcribe(port: int, pcm: Pcm, language: str = "en") -> list[Event]:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language=language).event())
        await client.write_event(AudioStart(rate=pcm.sample_rate, width=2, channels=1).event())
        for piece in chunks(pcm.data, pcm.sample_rate, 100):
            await client.write_event(AudioChunk(rate=pcm.sample_rate, width=2, channels=1, audio=piece).event())
        await client.write_event(AudioStop().event())
        return await read_until(client, "transcript")


def audio_of(events: list[Event]) -> Pcm:
    start = AudioStart.from_event(next(e for e in events if AudioStart.is_type(e.type)))
    data = b"".join(AudioChunk.from_event(e).audio for e in events if AudioChunk.is_type(e.type))
    return Pcm(data, start.rate)


async def test_describe_lists_languages_models_and_voices(gw: GatewayFleet) -> None:
    async with AsyncTcpClient("127.0.0.1", gw.asr_port) as client:
        await client.write_event(Describe().event())
        asr = Info.from_event((await read_until(client, "info"))[-1]).asr[0]
    assert asr.supports_transcript_streaming and asr.models[0].name == "base"
    assert {"fr", "en"} <= set(asr.models[0].languages)
    async with AsyncTcpClient("127.0.0.1", gw.tts_port) as client:
        await client.write_event(Describe().event())
        tts = Info.from_event((await read_until(client, "info"))[-1]).tts[0]
    assert tts.supports_synthesize_streaming and VOICE in {v.name for v in tts.voices}


async def test_transcribes_a_real_recording_with_streaming_events(gw: GatewayFleet) -> None:
    events = await transcribe(gw.asr_port, read_wav(DEMO / "en-capital-france.wav"))
    types = [e.type for e in events]
    assert types[0] == "transcript-start" and types[-2:] == ["transcript-stop", "transcript"], types
    streamed = "".join(TranscriptChunk.from_event(e).text for e in events if TranscriptChunk.is_type(e.type))
    final = Transcript.from_event(events[-1])
    assert words(final.text) == ["what", "is", "the", "capital", "of", "france"]
    assert streamed == final.text and final.language == "en"
    assert TranscriptStart.is_type(types[0]) and TranscriptStop.is_type(types[-2])


async def test_synthesize_then_read_back(gw: GatewayFleet) -> None:
    sentence = SENTENCE
    async with AsyncTcpClient("127.0.0.1", gw.tts_port) as client:
        await client.write_event(Synthesize(text=sentence, voice=SynthesizeVoice(name=VOICE)).event())
        events = await read_until(client, "audio-stop")
    assert events[0].type == "audio-start" and sum(AudioChunk.is_type(e.type) for e in events) > 1
    heard = Transcript.from_event((await transcribe(gw.asr_port, audio_of(events)))[-1])
    assert word_errors(heard.text, sentence) <= 2, heard.text


async def test_streaming_synthesis_then_read_back(gw: GatewayFleet) -> None:
    pieces = ["How many days ", "are in a week? ", "There are ", "seven days."]
    async with AsyncTcpClient("127.0.0.1", gw.tts_port) as client:
        await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name=VOICE)).event())
        for piece in pieces:
            await client.write_event(SynthesizeChunk(text=piece).event())
        # Home Assistant also sends the whole text for servers without streaming: ignored here.
        await client.write_event(Synthesize(text="".join(pieces), voice=SynthesizeVoice(name=VOICE)).event())
        await client.write_event(SynthesizeStop().event())
        events = await read_until(client, "synthesize-stopped")
    types = [e.type for e in events]
    assert types[0] == "audio-start" and types[-2:] == ["audio-stop", "synthesize-stopped"], types
    assert SynthesizeStopped.is_type(types[-1]) and types.count("audio-start") == 1
    heard = Transcript.from_event((await transcribe(gw.asr_port, audio_of(events)))[-1])
    assert word_errors(heard.text, "".join(pieces)) <= 2, heard.text
