"""Fuzzing the gateway over the real fleet: generated JSON bodies, multipart uploads, raw bodies
of any content type, Realtime events and Wyoming events. Every answer must be a success or an
error in the protocol's shape (never a 500, never a dropped Realtime socket), and after each
target the gateway must still answer a real request. Outcomes go to the reliability ledger."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.sync.client
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from services.testkit.ledger import record
from tests.gateway.harness import API_KEY, VOICE, GatewayFleet, gateway_fleet
from tests.reliability.protofuzz import fuzz_examples

AUTH = {"Authorization": f"Bearer {API_KEY}"}
WAV = (Path(__file__).resolve().parents[2] / "client" / "demo" / "en-two-plus-three.wav").read_bytes()
HTTP_OK = {200, 400, 404, 405, 413, 429, 503}

json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's plausible value most of the time, else anything JSON at all: bodies that are
    mostly right reach the services, the rest exercise every refusal."""
    return st.one_of(value, value, value, json_value)


message = st.fixed_dictionaries(
    {
        "role": maybe(st.sampled_from(["user", "user", "system", "assistant", "developer", "tool"])),
        "content": maybe(
            st.text(min_size=1, max_size=30)
            | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=10)}), max_size=2)
        ),
    }
)
chat_body = st.fixed_dictionaries(
    {
        "messages": maybe(st.lists(message, min_size=1, max_size=3)),
        "max_tokens": maybe(st.integers(1, 6)),  # kept small: a valid request runs the real LLM
    },
    optional={
        "model": maybe(st.sampled_from(["x", "smollm2-135m-instruct-q4_1", "canned"])),
        "stream": maybe(st.booleans()),
        "temperature": maybe(st.floats(0, 2)),
        "n": maybe(st.just(1)),
        "tools": st.one_of(st.none(), json_value),
        "stream_options": maybe(st.fixed_dictionaries({"include_usage": st.booleans()})),
    },
)
speech_body = st.fixed_dictionaries(
    {"input": maybe(st.text(min_size=1, max_size=40))},
    optional={
        "voice": maybe(st.sampled_from([VOICE, "alloy", "en", "fr", "nobody", ""])),
        "model": maybe(st.just("tts-1")),
        "response_format": maybe(st.sampled_from(["wav", "pcm", "mp3", "opus", "flac", "aac", "ogg"])),
        "speed": maybe(st.floats(0, 5)),
        "stream_format": maybe(st.sampled_from(["audio", "sse", "chunks"])),
    },
)  # fmt: skip


def _noise(n: int) -> bytes:
    return bytes((i * 7919 + n) % 256 for i in range(n))


audio_file = st.one_of(
    st.binary(max_size=256),
    st.integers(0, 32000).map(_noise),
    st.integers(0, len(WAV)).map(lambda n: WAV[:n]),  # cut anywhere, header included
    st.tuples(st.integers(1, 4), st.integers(1, 96000), st.integers(0, 4000)).map(
        lambda t: (
            b"RIFF"
            + struct.pack("<I", 36 + t[2])
            + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, t[0], t[1], t[1] * 2 * t[0], 2 * t[0], 16)
            + b"data"
            + struct.pack("<I", t[2])
            + _noise(t[2])
        )
    ),
)
form_fields = st.dictionaries(
    st.sampled_from(
        ["model", "language", "prompt", "response_format", "temperature", "stream", "timestamp_granularities[]"]
    ),
    st.text(max_size=12),
    max_size=5,
)
raw_body = st.tuples(
    st.sampled_from(["/audio/transcriptions", "/audio/speech", "/chat/completions"]),
    st.sampled_from(
        [
            "application/json",
            "multipart/form-data",
            "multipart/form-data; boundary=x",
            "text/plain",
            "application/octet-stream",
            "",
        ]
    ),
    st.one_of(
        st.binary(max_size=300),
        st.sampled_from([b'{"input": NaN, "messages": Infinity}', b'{"max_tokens": 1e999}', b"[" * 5000]),
    ),
)
realtime_event = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(["session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear", "conversation.item.create", "response.cancel", "bogus.event"]), json_value)},
    optional={"session": json_value, "audio": maybe(st.sampled_from(["", "AAAA", "AAE=", "!!", "AQID"])), "item": json_value, "event_id": json_value},
)  # fmt: skip
wyoming_event = st.tuples(
    st.sampled_from(["describe", "transcribe", "audio-start", "audio-chunk", "audio-stop", "synthesize", "synthesize-start", "synthesize-chunk", "synthesize-stop", "nonsense"]),
    st.dictionaries(st.sampled_from(["text", "rate", "width", "channels", "language", "voice", "name"]), json_value, max_size=4),
    st.binary(max_size=64),
)  # fmt: skip


def fuzz_settings(target: str) -> Callable[[Any], Any]:
    return settings(
        max_examples=fuzz_examples("gateway", target),
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


@pytest.fixture(scope="module")
async def gw() -> AsyncIterator[GatewayFleet]:
    async with gateway_fleet() as fleet:
        yield fleet


async def still_serving(gw: GatewayFleet) -> bool:
    async with httpx.AsyncClient(base_url=gw.base_url, headers=AUTH, timeout=60) as http:
        r = await http.post("/audio/transcriptions", files={"file": ("q.wav", WAV)}, data={"language": "en"})
    return r.status_code == 200 and "plus" in r.json()["text"].lower()


@dataclass
class Seen:
    """What one target sent and got: ``calls`` generated calls (requests, events) and the
    ``codes`` of their replies (a Realtime or Wyoming event may get several replies)."""

    calls: int = 0
    codes: Counter[str] = field(default_factory=Counter)


def check_http(r: httpx.Response, seen: Seen) -> None:
    seen.calls += 1
    seen.codes[str(r.status_code)] += 1
    assert r.status_code in HTTP_OK, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], error


async def run_target(gw: GatewayFleet, name: str, body: Callable[[Seen], None]) -> None:
    """Runs one fuzz target in a worker thread (its clients block; the fleet's loop runs here)."""
    seen = Seen()
    started = time.monotonic()
    failure: BaseException | None = None
    try:
        await asyncio.to_thread(body, seen)
    except BaseException as exc:
        failure = exc
    serving = await still_serving(gw)
    record(
        "bad_input",
        f"gateway {name}",
        passed=failure is None and serving,
        contract="gateway",
        examples=seen.calls,
        replies=sum(seen.codes.values()),
        codes=dict(seen.codes),
        seconds=round(time.monotonic() - started, 1),
        real_call_after=serving,
        failure=repr(failure)[:300] if failure else None,
    )
    if failure is not None:
        raise failure
    assert serving, f"the gateway stopped answering after fuzzing {name}"


async def test_fuzz_chat_completions(gw: GatewayFleet) -> None:
    def body(seen: Seen) -> None:
        with httpx.Client(base_url=gw.base_url, headers=AUTH, timeout=120) as http:

            @fuzz_settings("chat completions")
            @given(chat_body)
            def one(payload: dict[str, Any]) -> None:
                check_http(http.post("/chat/completions", json=payload), seen)

            one()

    await run_target(gw, "POST /v1/chat/completions (generated JSON)", body)


async def test_fuzz_speech(gw: GatewayFleet) -> None:
    def body(seen: Seen) -> None:
        with httpx.Client(base_url=gw.base_url, headers=AUTH, timeout=120) as http:

            @fuzz_settings("speech")
            @given(speech_body)
            def one(payload: dict[str, Any]) -> None:
                check_http(http.post("/audio/speech", json=payload), seen)

            one()

    await run_target(gw, "POST /v1/audio/speech (generated JSON)", body)


async def test_fuzz_transcriptions(gw: GatewayFleet) -> None:
    def body(seen: Seen) -> None:
        with httpx.Client(base_url=gw.base_url, headers=AUTH, timeout=120) as http:

            @fuzz_settings("transcriptions")
            @given(audio_file, form_fields)
            def one(audio: bytes, fields: dict[str, str]) -> None:
                check_http(http.post("/audio/transcriptions", files={"file": ("f.bin", audio)}, data=fields), seen)

            one()

    await run_target(gw, "POST /v1/audio/transcriptions (generated files and fields)", body)


async def test_fuzz_raw_bodies(gw: GatewayFleet) -> None:
    def body(seen: Seen) -> None:
        with httpx.Client(base_url=gw.base_url, headers=AUTH, timeout=60) as http:

            @fuzz_settings("raw bodies")
            @given(raw_body)
            def one(target: tuple[str, str, bytes]) -> None:
                path, content_type, data = target
                check_http(
                    http.post(path, content=data, headers={"Content-Type": content_type} if content_type else {}), seen
                )

            one()

    await run_target(gw, "raw bodies of any content type on every POST endpoint", body)


async def test_fuzz_realtime_events(gw: GatewayFleet) -> None:
    url = gw.base_url.replace("http", "ws") + "/realtime"

    def body(seen: Seen) -> None:
        with websockets.sync.client.connect(url, additional_headers=AUTH, max_size=None) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "session.created"

            @fuzz_settings("realtime events")
            @given(realtime_event)
            def one(event: dict[str, Any]) -> None:
                seen.calls += 1
                ws.send(json.dumps(event))
                # Every event is answered (an error, an ack) or takes effect silently (append);
                # a ping proves the socket and the session are alive either way.
                ws.send(json.dumps({"type": "input_audio_buffer.clear", "event_id": "ping"}))
                while True:
                    reply = json.loads(ws.recv(timeout=30))
                    seen.codes[reply["type"]] += 1
                    if reply["type"] == "error":
                        assert reply["error"]["message"] and reply["error"]["type"], reply
                    if reply["type"] == "input_audio_buffer.cleared":
                        return

            one()

    await run_target(gw, "Realtime events (generated JSON on one socket)", body)


async def test_fuzz_wyoming_events(gw: GatewayFleet) -> None:
    def body(seen: Seen) -> None:
        @fuzz_settings("wyoming events")
        @given(wyoming_event, st.sampled_from([gw.asr_port, gw.tts_port]))
        def one(event: tuple[str, dict[str, Any], bytes], port: int) -> None:
            kind, data, payload = event
            seen.calls += 1
            header = {"type": kind, "data": data, "payload_length": len(payload)}
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(json.dumps(header).encode() + b"\n" + payload)
                # Then a describe: a server that still reads this connection answers it.
                sock.sendall(b'{"type": "describe"}\n')
                stream = sock.makefile("rb")
                while line := stream.readline():
                    reply = json.loads(line)
                    seen.codes[reply["type"]] += 1
                    if reply.get("data_length"):
                        stream.read(reply["data_length"])
                    if reply.get("payload_length"):
                        stream.read(reply["payload_length"])
                    if reply["type"] == "info":
                        return
                raise AssertionError(f"connection closed without an answer to {kind}")

        one()

    await run_target(gw, "Wyoming events (generated, both servers)", body)
