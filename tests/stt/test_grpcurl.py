"""The real entry point (python -m services.stt) called by grpcurl with reflection only."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import sys
import urllib.request
from pathlib import Path

import pytest

from services.runtime.audio import Pcm
from services.testkit.transcripts import normalise

REPO = Path(__file__).resolve().parents[2]
GRPCURL = REPO / ".venv" / "bin" / "grpcurl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def grpcurl(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL), "-plaintext", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate(stdin)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_grpcurl_unary_recognize_with_json(short_phrase: Pcm) -> None:
    if not GRPCURL.is_file():
        pytest.skip("grpcurl is not installed in .venv (make install)")
    port, metrics = free_port(), free_port()
    env = {
        **os.environ,
        "STT_SERVER__HOST": "127.0.0.1",
        "STT_SERVER__PORT": str(port),
        "STT_SERVER__METRICS_PORT": str(metrics),
        "STT_SERVER__METRICS_HOST": "127.0.0.1",
    }
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.stt", cwd=REPO, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    target = f"127.0.0.1:{port}"
    try:
        for _ in range(120):  # model load and warm-up, on a busy CPU
            code, out, _ = await grpcurl(target, "grpc.health.v1.Health/Check")
            if code == 0 and "SERVING" in out and "NOT_SERVING" not in out:
                break
            assert server.returncode is None, "the service exited during start-up"
            await asyncio.sleep(0.5)
        code, out, _ = await grpcurl(target, "list")
        assert "parole.stt.v1.SttService" in out.split()
        request = {
            "config": {
                "language": "en",
                "audioFormat": {"sampleRateHz": 16000, "encoding": "AUDIO_ENCODING_PCM_S16LE"},
            },
            "audio": base64.b64encode(short_phrase.data).decode(),
        }
        code, out, err = await grpcurl(
            "-d", "@", target, "parole.stt.v1.SttService/Recognize", stdin=json.dumps(request).encode()
        )
        assert code == 0, err
        reply = json.loads(out)
        assert "light" in " ".join(normalise(reply["result"]["transcript"]))
        # grpcurl prints the proto field names (snake_case).
        assert reply["result"]["is_final"] and reply["result"]["engine"] == "base", out
        page = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics").read().decode()
        )
        assert 'parole_stt_audio_seconds_total{rpc="unary"}' in page
        assert "parole_stt_decode_seconds_bucket" in page and "parole_stt_real_time_factor_bucket" in page
    finally:
        if server.returncode is None:
            server.terminate()
        _, stderr = await asyncio.wait_for(server.communicate(), 30)
    assert server.returncode == 0, stderr.decode()[-2000:]
