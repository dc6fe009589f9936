"""The shared server: health, reflection, readiness, errors, limits, auth, TLS, metrics, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest

from parole.llm.v1 import llm_pb2, llm_pb2_grpc
from services.runtime import healthcheck
from services.runtime.channel import ChannelSettings, open_channel
from services.runtime.errors import field_violations
from services.runtime.server import RunningServer, start_app, start_server
from tests.conftest import REPO
from tests.foundation.conftest import local
from tests.foundation.echo_service import SERVICE, EchoApp, EchoSettings
from tests.pki import make_pki

GRPCURL = str(Path(sys.executable).with_name("grpcurl"))


async def grpcurl(*args: str) -> str:
    # Through asyncio: the server under test runs on this same event loop.
    proc = await asyncio.create_subprocess_exec(
        GRPCURL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_grpcurl_sees_services_and_health_not_serving_until_warm() -> None:
    app = EchoApp(EchoSettings())
    running = await start_server("echo", local(), app.register)
    try:
        target = f"127.0.0.1:{running.port}"
        listed = (await grpcurl("-plaintext", target, "list")).split()
        assert SERVICE in listed and "grpc.health.v1.Health" in listed
        check = ["-plaintext", "-d", json.dumps({"service": SERVICE}), target, "grpc.health.v1.Health/Check"]
        assert json.loads(await grpcurl(*check))["status"] == "NOT_SERVING"
        # Calls to the service itself are refused with a reason while it loads.
        async with grpc.aio.insecure_channel(target) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await llm_pb2_grpc.LlmServiceStub(ch).ListModels(llm_pb2.ListModelsRequest())
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "loading" in (err.value.details() or "")
        await app.warm_up()
        await running.set_serving()
        assert json.loads(await grpcurl(*check))["status"] == "SERVING"
        described = await grpcurl("-plaintext", target, "describe", SERVICE)
        assert "GenerateRequest" in described
    finally:
        await running.stop(0)


async def test_errors_map_to_status_with_field_details(echo_channel: grpc.aio.Channel) -> None:
    stub = llm_pb2_grpc.LlmServiceStub(echo_channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [r async for r in stub.Generate(llm_pb2.GenerateRequest(text="  "))]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == {"text": "must not be blank"}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [r async for r in stub.Generate(llm_pb2.GenerateRequest(text="crash"))]
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "RuntimeError" in (err.value.details() or "")
    # ...and the service keeps serving.
    words = [r.delta async for r in stub.Generate(llm_pb2.GenerateRequest(text="still here")) if r.delta]
    assert words == ["still", "here"]


async def test_oversized_message_is_resource_exhausted_and_server_keeps_serving() -> None:
    running = await start_app(EchoApp(EchoSettings()), local(max_receive_message_bytes=1024))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = llm_pb2_grpc.LlmServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                [r async for r in stub.Generate(llm_pb2.GenerateRequest(text="x " * 2000))]
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            ok = [r async for r in stub.Generate(llm_pb2.GenerateRequest(text="small"))]
            assert ok[0].delta == "small"
    finally:
        await running.stop(0)


async def test_token_auth() -> None:
    running = await start_app(EchoApp(EchoSettings()), local(auth_token="s3cret"))
    target = f"127.0.0.1:{running.port}"
    try:
        for token in (None, "wrong"):
            ch = open_channel(ChannelSettings(target=target, token=token))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await llm_pb2_grpc.LlmServiceStub(ch).ListModels(llm_pb2.ListModelsRequest())
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "Bearer" in (err.value.details() or "")
            # Probes need no secret: health stays reachable without the token.
            assert await healthcheck.status(ch) == healthcheck.SERVING
            await ch.close()
        async with open_channel(ChannelSettings(target=target, token="s3cret")) as ch:
            reply = await llm_pb2_grpc.LlmServiceStub(ch).ListModels(llm_pb2.ListModelsRequest())
            assert reply.models[0].backend == "echo"
            words = [
                r.delta async for r in llm_pb2_grpc.LlmServiceStub(ch).Generate(llm_pb2.GenerateRequest(text="a b"))
            ]
            assert words[:2] == ["a", "b"]
    finally:
        await running.stop(0)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    return make_pki(tmp_path_factory.mktemp("pki"))


async def test_mtls_round_trip_and_refusals(pki: dict[str, Path]) -> None:
    tls = {"cert_file": pki["server_cert"], "key_file": pki["server_key"], "client_ca_file": pki["ca"]}
    running = await start_app(EchoApp(EchoSettings()), local(tls=tls))
    target = f"127.0.0.1:{running.port}"
    try:
        good = ChannelSettings(
            target=target, ca_file=pki["ca"], cert_file=pki["client_cert"], key_file=pki["client_key"]
        )
        async with open_channel(good) as ch:
            words = [
                r.delta
                async for r in llm_pb2_grpc.LlmServiceStub(ch).Generate(llm_pb2.GenerateRequest(text="over tls"))
            ]
            assert words[:2] == ["over", "tls"]
        # No client certificate: the mTLS handshake fails. Plaintext to a TLS port fails too.
        for bad in (ChannelSettings(target=target, ca_file=pki["ca"]), ChannelSettings(target=target)):
            async with open_channel(bad) as ch:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await llm_pb2_grpc.LlmServiceStub(ch).ListModels(llm_pb2.ListModelsRequest(), timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.stop(0)


async def test_metrics_endpoint_counts_calls_by_code(
    echo_server: RunningServer, echo_channel: grpc.aio.Channel
) -> None:
    stub = llm_pb2_grpc.LlmServiceStub(echo_channel)
    await stub.ListModels(llm_pb2.ListModelsRequest())
    with pytest.raises(grpc.aio.AioRpcError):
        [r async for r in stub.Generate(llm_pb2.GenerateRequest(text=""))]
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{echo_server.metrics_port}/metrics").read().decode()
    )
    assert (
        f'grpc_server_handled_total{{grpc_code="OK",grpc_method="ListModels",grpc_service="{SERVICE}",grpc_type="unary"}}'
        in body
    )
    assert 'grpc_code="INVALID_ARGUMENT",grpc_method="Generate"' in body
    assert "grpc_server_handling_seconds_bucket" in body
    assert "grpc_server_msg_sent_total" in body


def _wait_serving(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if healthcheck.status_sync(ch, timeout=1) == healthcheck.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise AssertionError("server never reported SERVING")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sigterm_drains_in_flight_call_then_exits_cleanly() -> None:
    port = _free_port()
    env = {
        **os.environ,
        "ECHO_SERVER__PORT": str(port),
        "ECHO_SERVER__HOST": "127.0.0.1",
        "ECHO_SERVER__GRACE_SECONDS": "10",
        "ECHO_DELAY_SECONDS": "0.3",
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.foundation.echo_service"], cwd=REPO, env=env, stderr=subprocess.PIPE
    )
    try:
        _wait_serving(port, proc)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = llm_pb2_grpc.LlmServiceStub(ch)
            call = stub.Generate(llm_pb2.GenerateRequest(text="one two three four five six"), timeout=30)
            first = next(call)
            assert first.delta == "one"
            proc.send_signal(signal.SIGTERM)
            rest = list(call)  # the in-flight call runs to its end (~1.5 s) despite SIGTERM
            assert [r.delta for r in rest if r.delta] == ["two", "three", "four", "five", "six"]
            assert rest[-1].summary.backend == "echo"
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_wrong_device_exits_non_zero_with_what_it_found() -> None:
    env = {**os.environ, "ECHO_DEVICE__REQUIRE_GPU": "true", "ECHO_SERVER__PORT": "0", "PYTHONPATH": str(REPO)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.foundation.echo_service"],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=60,
        text=True,
    )
    assert proc.returncode == 3
    assert "a GPU is required" in proc.stderr and "no GPU" in proc.stderr


def test_bad_config_exits_non_zero_with_reason(tmp_path: Path) -> None:
    bad = tmp_path / "echo.yaml"
    bad.write_text("server:\n  port: not-a-port\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.foundation.echo_service", "--config", str(bad)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, timeout=60, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "configuration error" in proc.stderr and "port" in proc.stderr
