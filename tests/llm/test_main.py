"""``python -m services.llm`` starts from env settings, answers, and exits cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time

import grpc

from parole.llm.v1 import llm_pb2, llm_pb2_grpc
from services.runtime.healthcheck import SERVING, status
from tests.llm.conftest import SMOL, ask


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_module_entry_point_serves_and_drains() -> None:
    port = free_port()
    env = {
        **os.environ,
        "LLM_BACKENDS": '["llamacpp", "canned"]',
        "LLM_LLAMACPP__MODEL": SMOL,
        "LLM_LLAMACPP__THREADS": "2",
        "LLM_SERVER__HOST": "127.0.0.1",
        "LLM_SERVER__METRICS_PORT": "0",
        "LLM_DEVICE__DEVICE": "cpu",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.llm", "--port", str(port), env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            deadline = time.monotonic() + 60
            while True:
                assert proc.returncode is None, "the service exited during start-up"
                try:
                    if await status(channel, "parole.llm.v1.LlmService", deadline=2) == SERVING:
                        break
                except grpc.aio.AioRpcError:
                    pass
                assert time.monotonic() < deadline, "not SERVING within 60 s"
                await asyncio.sleep(0.2)
            stub: llm_pb2_grpc.LlmServiceAsyncStub = llm_pb2_grpc.LlmServiceStub(channel)  # type: ignore[assignment]
            answer = await ask(stub, "Hello", session_id="main", options={"max_tokens": 4})
            assert answer.summary.backend == "llamacpp"
            assert answer.summary.model == SMOL
            models = await stub.ListModels(llm_pb2.ListModelsRequest())
            assert [m.backend for m in models.models] == ["llamacpp", "canned"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
