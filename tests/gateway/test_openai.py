"""The official ``openai`` SDK against the gateway, over the real fleet: transcription (plain,
verbose, subtitles, streamed), speech that our STT reads back, chat completions and models."""

from __future__ import annotations

import re
import wave
from io import BytesIO
from pathlib import Path

import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from services.runtime.audio import read_wav_bytes
from tests.gateway.harness import API_KEY, SENTENCE, VOICE, GatewayFleet, word_errors, words

DEMO = Path(__file__).resolve().parents[2] / "client" / "demo"


@pytest.fixture
def client(gw: GatewayFleet) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gw.base_url, api_key=API_KEY, max_retries=0, timeout=120)


async def test_transcribes_a_real_recording(client: AsyncOpenAI) -> None:
    with (DEMO / "en-capital-france.wav").open("rb") as f:
        result = await client.audio.transcriptions.create(model="whisper-1", file=f, language="en")
    assert words(result.text) == ["what", "is", "the", "capital", "of", "france"]


def encode(pcm: bytes, rate: int, container: str, codec: str) -> bytes:
    """The recording in another container/codec, as a browser or a phone would record it."""
    import av
    import numpy as np

    out = BytesIO()
    with av.open(out, mode="w", format=container) as box:
        stream = box.add_stream(codec, rate=48000 if codec == "libopus" else rate)
        assert isinstance(stream, av.AudioStream)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            box.mux(packet)
        for packet in stream.encode(None):
            box.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize(
    ("container", "codec", "suffix"),
    [("mp3", "libmp3lame", "mp3"), ("ogg", "libopus", "ogg"), ("flac", "flac", "flac"), ("webm", "libopus", "webm"), ("ipod", "aac", "m4a")],
)  # fmt: skip
async def test_transcribes_every_upload_format(client: AsyncOpenAI, container: str, codec: str, suffix: str) -> None:
    pcm = read_wav_bytes((DEMO / "en-capital-france.wav").read_bytes())
    audio = encode(pcm.data, pcm.sample_rate, container, codec)
    result = await client.audio.transcriptions.create(
        model="whisper-1", file=(f"question.{suffix}", audio), language="en"
    )
    assert words(result.text) == ["what", "is", "the", "capital", "of", "france"], result.text


async def test_verbose_json_has_words_and_segments_and_srt_vtt_follow(client: AsyncOpenAI) -> None:
    audio = (DEMO / "en-days-week.wav").read_bytes()
    duration = len(read_wav_bytes(audio).data) / 2 / 16000
    verbose = await client.audio.transcriptions.create(
        model="whisper-1",
        file=("q.wav", audio),
        language="en",
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert "days" in words(verbose.text) and verbose.language == "en"
    assert verbose.duration == pytest.approx(duration, abs=0.01)
    assert verbose.words and [w.word.strip(" ?.,").lower() for w in verbose.words][-3:] == ["in", "a", "week"]
    assert all(0 <= w.start <= w.end <= duration + 0.1 for w in verbose.words)
    assert verbose.segments and verbose.segments[0].text.lower().startswith("how many")
    srt = await client.audio.transcriptions.create(
        model="whisper-1", file=("q.wav", audio), language="en", response_format="srt"
    )
    assert re.match(r"1\n00:00:\d\d,\d{3} --> 00:00:\d\d,\d{3}\nhow many days", str(srt), re.IGNORECASE), srt
    vtt = await client.audio.transcriptions.create(
        model="whisper-1", file=("q.wav", audio), language="en", response_format="vtt"
    )
    assert str(vtt).startswith("WEBVTT\n\n00:00:") and "week" in str(vtt)
    text = await client.audio.transcriptions.create(
        model="whisper-1", file=("q.wav", audio), language="en", response_format="text"
    )
    assert "days" in words(str(text))


async def test_transcription_streams_as_server_sent_events(client: AsyncOpenAI) -> None:
    events = []
    stream = await client.audio.transcriptions.create(
        model="whisper-1", file=(DEMO / "en-two-plus-three.wav").open("rb"), language="en", stream=True
    )
    async for event in stream:
        events.append(event)
    assert [e.type for e in events][-1] == "transcript.text.done"
    deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
    done = events[-1]
    assert done.type == "transcript.text.done" and deltas == done.text and "plus" in words(deltas)


@pytest.mark.parametrize("fmt", ["mp3", "wav", "opus", "flac"])
async def test_speech_streams_and_our_stt_reads_it_back(client: AsyncOpenAI, fmt: str) -> None:
    sentence = SENTENCE
    pieces = []
    async with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice=VOICE,
        input=sentence,
        response_format=fmt,  # type: ignore[arg-type]
    ) as response:
        assert response.headers["content-type"].startswith("audio/")
        async for piece in response.iter_bytes():
            pieces.append(piece)
    audio = b"".join(pieces)
    if fmt == "wav":
        with wave.open(BytesIO(audio)) as w:
            assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (24000, 2, 1)
    # Read back through the gateway's own transcription endpoint: the file goes through
    # FFmpeg's decoder there, our STT hears it.
    heard = await client.audio.transcriptions.create(model="whisper-1", file=(f"speech.{fmt}", audio), language="en")
    assert word_errors(heard.text, sentence) <= 2, heard.text


async def test_pcm_speech_is_24khz_raw_and_speed_counts(client: AsyncOpenAI) -> None:
    text = "Hello there, how are you today?"
    normal = (await client.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="pcm")).content
    fast = (
        await client.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="pcm", speed=2.0)
    ).content
    assert len(normal) % 2 == 0 and 0.8 < len(normal) / 2 / 24000 < 5.0  # seconds at 24 kHz
    assert len(fast) < 0.75 * len(normal)


async def test_chat_completion_streams_and_whole(client: AsyncOpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "What is the capital of France? Answer in one word."}
    ]
    stream = await client.chat.completions.create(
        model="smollm2-135m-instruct-q4_1",
        messages=messages,
        stream=True,
        max_tokens=24,
        stream_options={"include_usage": True},
    )
    deltas, finish, usage = [], None, None
    async for chunk in stream:
        if chunk.choices:
            deltas.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(deltas).strip() and finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens > 0
    whole = await client.chat.completions.create(
        model="anything",
        messages=messages,
        max_tokens=24,
        temperature=0,
    )
    assert whole.choices[0].message.content and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage is not None and whole.usage.prompt_tokens > 0


async def test_models_lists_stt_llm_and_voices(client: AsyncOpenAI) -> None:
    ids = {m.id for m in (await client.models.list()).data}
    assert {"base", "smollm2-135m-instruct-q4_1", VOICE} <= ids
    voice = await client.models.retrieve(VOICE)
    assert voice.id == VOICE and voice.model_extra and voice.model_extra["parole"]["kind"] == "tts"
