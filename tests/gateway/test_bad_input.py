"""Bad input on every surface gets a clear error in the protocol's own shape, and the gateway
keeps serving: OpenAI JSON errors with the right status, Realtime ``error`` events on an open
socket, Wyoming ``error`` events."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import websockets
from openai import AsyncOpenAI
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeVoice

from tests.gateway.harness import API_KEY, VOICE, GatewayFleet

DEMO = Path(__file__).resolve().parents[2] / "client" / "demo"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
WAV = (DEMO / "en-two-plus-three.wav").read_bytes()


@pytest.fixture
async def http(gw: GatewayFleet) -> Any:
    async with httpx.AsyncClient(base_url=gw.base_url, headers=AUTH, timeout=60) as client:
        yield client


def assert_error(
    r: httpx.Response, status: int, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


async def still_serving(http: httpx.AsyncClient) -> None:
    r = await http.post("/audio/transcriptions", files={"file": ("q.wav", WAV)}, data={"language": "en"})
    assert r.status_code == 200 and "plus" in r.json()["text"].lower()


@pytest.mark.parametrize(
    ("files", "data", "param", "code"),
    [
        (None, {"model": "whisper-1"}, "file", None),  # no file
        (None, {"file": "not a file"}, "file", "invalid_type"),  # text where a file goes
        ({"file": ("empty.wav", b"")}, {}, "file", "empty_file"),
        ({"file": ("noise.mp3", b"\x00\xff" * 4000)}, {}, "file", "invalid_audio"),  # corrupt
        ({"file": ("q.wav", WAV)}, {"response_format": "xml"}, "response_format", None),
        ({"file": ("q.wav", WAV)}, {"timestamp_granularities[]": "word"}, "timestamp_granularities", None),
        ({"file": ("q.wav", WAV)}, {"temperature": "hot"}, "temperature", "invalid_type"),
        ({"file": ("q.wav", WAV)}, {"stream": "maybe"}, "stream", "invalid_type"),
        ({"file": ("q.wav", WAV)}, {"language": "zz"}, "config.language", "invalid_argument"),  # refused by STT
    ],
)
async def test_transcription_refusals(
    http: httpx.AsyncClient, files: Any, data: Any, param: str, code: str | None
) -> None:
    r = await http.post("/audio/transcriptions", files=files, data=data)
    assert_error(r, 400, param=param, code=code)


async def test_transcription_wrong_content_type_and_huge_body(http: httpx.AsyncClient, gw: GatewayFleet) -> None:
    assert_error(await http.post("/audio/transcriptions", json={"file": "x"}), 400, param="file")
    huge = b"\x00" * (gw.gateway.settings.http.max_upload_bytes + 1)
    assert_error(
        await http.post("/audio/transcriptions", files={"file": ("big.wav", huge)}), 413, code="request_too_large"
    )
    await still_serving(http)


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "tts-1", "voice": VOICE}, "input", "missing_required_parameter"),
        ({"input": 42, "voice": VOICE}, "input", "invalid_type"),
        ({"input": "   ", "voice": VOICE}, "input", None),
        ({"input": "x" * 5000, "voice": VOICE}, "input", None),
        ({"input": "Hello.", "voice": "no-such-voice"}, "voice", "unknown_voice"),
        ({"input": "Hello.", "voice": VOICE, "speed": 10}, "speed", None),
        ({"input": "Hello.", "voice": VOICE, "speed": "fast"}, "speed", None),
        ({"input": "Hello.", "voice": VOICE, "response_format": "ogg-vorbis"}, "response_format", None),
        ({"input": "Hello.", "voice": VOICE, "stream_format": "chunks"}, "stream_format", None),
    ],
)
async def test_speech_refusals(http: httpx.AsyncClient, body: dict[str, Any], param: str, code: str | None) -> None:
    assert_error(await http.post("/audio/speech", json=body), 400, param=param, code=code)


async def test_speech_body_not_json_not_object_or_huge(http: httpx.AsyncClient, gw: GatewayFleet) -> None:
    assert_error(await http.post("/audio/speech", content=b"{not json"), 400, code="invalid_json")
    assert_error(await http.post("/audio/speech", json=["a", "list"]), 400, code="invalid_json")
    big = {"input": "x" * (gw.gateway.settings.http.max_json_bytes + 10)}
    assert_error(await http.post("/audio/speech", json=big), 413, code="request_too_large")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": "hello"}, "messages"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": ["user"], "content": "hi"}]}, "messages[0].role"),  # found by the fuzzer
        ({"model": "m", "messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content",
        ),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, "tools"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 5}, "temperature"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}, "max_tokens"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 3}, "n"),
        ({"model": "m", "messages": [{"role": "assistant", "content": "hi"}]}, "text"),  # refused by the LLM
    ],
)
async def test_chat_refusals(http: httpx.AsyncClient, body: dict[str, Any], param: str) -> None:
    assert_error(await http.post("/chat/completions", json=body), 400, param=param)


async def test_auth_unknown_paths_and_models(gw: GatewayFleet, http: httpx.AsyncClient) -> None:
    for key in ("", "wrong-key"):
        client = AsyncOpenAI(base_url=gw.base_url, api_key=key or "x", max_retries=0)
        if not key:
            client = AsyncOpenAI(
                base_url=gw.base_url, api_key="unused", max_retries=0, default_headers={"Authorization": ""}
            )
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.models.list()
        assert caught.value.code == "invalid_api_key"
    async with httpx.AsyncClient(timeout=10) as bare:
        health = await bare.get(gw.base_url.removesuffix("/v1") + "/health")  # probes need no key
        assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert_error(await http.get("/no/such/endpoint"), 404, code="not_found")
    assert_error(await http.get("/audio/speech"), 405, code="method_not_allowed")
    assert_error(await http.get("/models/no-such-model"), 404, param="model", code="model_not_found")
    await still_serving(http)


# ------------------------------------------------------------------------------------ Realtime
async def ws_events(ws: Any, until: str, within: float = 30) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while True:
            event = json.loads(await ws.recv())
            events.append(event)
            if event["type"] == until:
                return events


async def test_realtime_bad_events_get_error_events_on_an_open_socket(gw: GatewayFleet) -> None:
    url = gw.base_url.replace("http", "ws") + "/realtime?model=parole"
    async with websockets.connect(url, additional_headers=AUTH, max_size=None) as ws:
        await ws_events(ws, "session.created")
        bad: list[tuple[str | bytes, str]] = [
            ("{not json", "invalid_json"),
            ("[1, 2]", "invalid_event"),
            (json.dumps({"type": "no.such.event", "event_id": "e1"}), "invalid_value"),
            (b"\x00\x01binary", "invalid_event"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": "###"}), "invalid_value"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": 12}), "invalid_value"),
            (json.dumps({"type": "input_audio_buffer.commit"}), "input_audio_buffer_commit_empty"),
            (json.dumps({"type": "response.cancel"}), "response_cancel_not_active"),
            (json.dumps({"type": "response.create"}), "conversation_empty"),
            (json.dumps({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 8000}}}}}), "unsupported_format"),
            (json.dumps({"type": "session.update", "session": {"audio": {"output": {"voice": "nobody"}}}}), "unknown_voice"),
            (json.dumps({"type": "session.update", "session": {"tools": [{"type": "function"}]}}), "unsupported_parameter"),
            (json.dumps({"type": "conversation.item.create", "item": {"type": "message", "role": "system", "content": []}}), "unsupported_parameter"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (gw.gateway.settings.http.max_event_bytes + 4)}), "event_too_large"),
        ]  # fmt: skip
        for message, code in bad:
            await ws.send(message)
            error = (await ws_events(ws, "error"))[-1]["error"]
            assert error["code"] == code and error["message"], error
            if code == "invalid_value" and "no.such.event" in str(message):
                assert error["event_id"] == "e1" and error["param"] == "type"
        # Still the same session, still answering.
        await ws.send(json.dumps({"type": "session.update", "session": {"instructions": "Be brief."}}))
        assert (await ws_events(ws, "session.updated"))[-1]["session"]["instructions"] == "Be brief."


def text_turn(text: str) -> list[dict[str, Any]]:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return [{"type": "conversation.item.create", "item": item}, {"type": "response.create"}]


async def test_realtime_socket_closed_mid_answer_then_a_new_session_works(gw: GatewayFleet) -> None:
    url = gw.base_url.replace("http", "ws") + "/realtime"
    async with websockets.connect(url, additional_headers=AUTH) as ws:
        await ws_events(ws, "session.created")
        for event in text_turn("Tell me a long story about a cat."):
            await ws.send(json.dumps(event))
        await ws_events(ws, "response.output_audio_transcript.delta", 60)
    # Closed mid-answer. A new session is answered, text and audio.
    async with websockets.connect(url, additional_headers=AUTH) as ws:
        await ws_events(ws, "session.created")
        for event in text_turn("Say hi."):
            await ws.send(json.dumps(event))
        events = await ws_events(ws, "response.output_audio.delta", 120)
        assert any(e["type"] == "response.output_audio_transcript.delta" for e in events)
    async with asyncio.timeout(10):  # both sessions are cleaned up once their sockets close
        # The gateway has no event for a session's end: polled, under the deadline.
        while gw.gateway.realtime_sessions:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_realtime_wrong_key_gets_an_error_event_and_close(gw: GatewayFleet) -> None:
    url = gw.base_url.replace("http", "ws") + "/realtime"
    async with websockets.connect(url, additional_headers={"Authorization": "Bearer nope"}) as ws:
        event = json.loads(await ws.recv())
        assert event["type"] == "error" and event["error"]["code"] == "invalid_api_key"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    # A browser passes the key as a subprotocol; that is accepted too.
    async with websockets.connect(url, subprotocols=[websockets.Subprotocol("realtime"), websockets.Subprotocol(f"openai-insecure-api-key.{API_KEY}")]) as ws:  # fmt: skip
        assert json.loads(await ws.recv())["type"] == "session.created"


# ------------------------------------------------------------------------------------ Wyoming
async def raw_wyoming(port: int, data: bytes) -> list[Event]:
    """Writes raw bytes, reads events until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    events = []
    async with asyncio.timeout(10):
        while line := await reader.readline():
            header = json.loads(line)
            body = json.loads(await reader.readexactly(header["data_length"])) if header.get("data_length") else {}
            events.append(Event(type=header["type"], data=body))
    writer.close()
    return events


async def test_wyoming_malformed_events_close_that_connection_with_an_error(gw: GatewayFleet) -> None:
    for port in (gw.asr_port, gw.tts_port):
        for data in (
            b"this is not json\n",
            b'{"no": "type"}\n',
            b'{"type": "audio-chunk", "payload_length": 999999999999}\n',
            b"[" * 50_000 + b"\n",  # nested past the JSON decoder's depth
            b'["describe"]\n',
            b'{"type": "describe", "data_length": 2}\n[]',
        ):
            events = await raw_wyoming(port, data)
            assert [e.type for e in events] == ["error"] and events[0].data["code"] == "protocol_error", events


async def test_wyoming_bad_requests_get_errors_and_the_connection_goes_on(gw: GatewayFleet) -> None:
    async with AsyncTcpClient("127.0.0.1", gw.tts_port) as client:
        for event in (
            Synthesize(text="   ").event(),
            Synthesize(text="Hello.", voice=SynthesizeVoice(name="nobody")).event(),
            SynthesizeChunk(text="no stream started").event(),
            Event(type="synthesize", data={"no_text": 1}),
            Event(type="synthesize", data={"text": "Hi.", "voice": {"language": ["en"]}}),
        ):
            await client.write_event(event)
            reply = await client.read_event()
            assert reply is not None and reply.type == "error" and reply.data["text"], reply
        await client.write_event(Describe().event())
        reply = await client.read_event()
        assert reply is not None and reply.type == "info"
    async with AsyncTcpClient("127.0.0.1", gw.asr_port) as client:
        await client.write_event(AudioStart(rate=16000, width=3, channels=1).event())
        reply = await client.read_event()
        assert reply is not None and reply.type == "error" and reply.data["code"] == "bad_audio_format"
        # audio-stop with nothing before it: an empty transcript, as wyoming-faster-whisper answers.
        await client.write_event(AudioStop().event())
        events = [await client.read_event(), await client.read_event()]
        assert [e.type for e in events if e] == ["transcript-stop", "transcript"]
        # A chunk of an odd number of bytes for 16-bit audio: refused, then a good request works.
        await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=b"\x00" * 3).event())
        reply = await client.read_event()
        assert reply is not None and reply.type in ("error", "transcript-start")


async def test_realtime_append_of_odd_bytes_is_carried_not_refused(gw: GatewayFleet) -> None:
    """An append may split a sample between two events (clients cut base64 anywhere)."""
    url = gw.base_url.replace("http", "ws") + "/realtime"
    async with websockets.connect(url, additional_headers=AUTH) as ws:
        await ws_events(ws, "session.created")
        for piece in (b"\x01", b"\x00" * 4799):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(piece).decode()}))
        await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        assert (await ws_events(ws, "input_audio_buffer.cleared"))[-1]["type"] == "input_audio_buffer.cleared"
