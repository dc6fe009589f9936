"""The fleet launcher with a real subprocess service (the runtime's echo service)."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import grpc
import pytest

from services.fleet import Fleet, FleetError, ServiceSpec
from services.runtime.healthcheck import SERVING, status_sync

ECHO = ServiceSpec("echo", "tests.foundation.echo_service", "ECHO_", port=0, metrics_port=0)


def _serving(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            return status_sync(channel, timeout=1) == SERVING
        except grpc.RpcError:
            return False


def test_waits_for_serving_then_stops_its_children(tmp_path: Path) -> None:
    fleet = Fleet([ECHO], env={"echo": {"ECHO_WARM_UP_SECONDS": "1.0"}}, log_dir=tmp_path, stop_grace=5)
    assert fleet.command(fleet.specs[0]) == [sys.executable, "-m", "tests.foundation.echo_service"]
    with pytest.raises(RuntimeError, match="boom"), fleet:
        child = fleet.children["echo"]
        assert child.serving_after is not None and child.serving_after >= 1.0
        assert _serving(fleet.target("echo"))
        env = fleet.environment(fleet.specs[0])
        assert env["ECHO_SERVER__HOST"] == "127.0.0.1"
        assert env["ECHO_SERVER__PORT"] == str(fleet.specs[0].port) != "0"
        raise RuntimeError("boom")
    # Stopped on the way out of the exception, gracefully (SIGTERM, exit 0).
    assert child.process.returncode == 0
    assert fleet.children == {}
    assert not _serving(fleet.target("echo"))
    assert "stopped" in (tmp_path / "echo.log").read_text()


def test_a_child_that_dies_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    fleet = Fleet([ECHO], env={"echo": {"ECHO_DELAY_SECONDS": "not-a-number"}}, log_dir=tmp_path)
    began = time.monotonic()
    with pytest.raises(FleetError) as caught:
        fleet.start()
    message = str(caught.value)
    assert "echo (python -m tests.foundation.echo_service) exited with code 2 before it was SERVING" in message
    # The tail of its log says why: the service's own configuration error.
    assert "configuration error" in message and "delay_seconds" in message
    assert time.monotonic() - began < 20, "an early exit must be noticed without waiting for the timeout"


def test_a_service_that_never_serves_times_out_and_is_stopped(tmp_path: Path) -> None:
    fleet = Fleet([ECHO], env={"echo": {"ECHO_WARM_UP_SECONDS": "60"}}, log_dir=tmp_path, ready_timeout=2)
    with pytest.raises(FleetError, match=r"echo not SERVING after 2 s \(NOT_SERVING \(loading\)\)") as caught:
        fleet.start()
    assert "listening" in str(caught.value)
    assert fleet.children == {}
    assert not _serving(fleet.target("echo"))


def test_dependents_start_after_their_dependencies_and_get_their_targets(tmp_path: Path) -> None:
    front = ServiceSpec("front", "tests.foundation.echo_service", "ECHO_", port=0, metrics_port=0, depends_on=("echo",))
    ready: list[str] = []
    fleet = Fleet(
        [front, ECHO],
        env={"echo": {"ECHO_WARM_UP_SECONDS": "1.0"}},
        log_dir=tmp_path,
        stop_grace=5,
        on_ready=lambda child: ready.append(child.spec.name),
    )
    with fleet:
        echo, dependent = fleet.children["echo"], fleet.children["front"]
        assert echo.serving_after is not None
        assert dependent.started_at >= echo.started_at + echo.serving_after
        assert fleet.environment(fleet.specs[0])["ECHO_ECHO__TARGET"] == fleet.target("echo")
        assert _serving(fleet.target("front"))
        assert ready == ["echo", "front"]
    assert list(fleet.targets) == ["front", "echo"]


def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        fleet = Fleet([ECHO], ports={"echo": port}, log_dir=tmp_path)
        with pytest.raises(FleetError, match=f"ports already in use: echo :{port}"):
            fleet.start()
    assert not (tmp_path / "echo.log").exists()


def test_unknown_dependencies_are_refused() -> None:
    with pytest.raises(ValueError, match="orchestrator needs stt, llm, tts"):
        Fleet(["orchestrator"])


def test_restart_brings_a_killed_service_back_on_its_port(tmp_path: Path) -> None:
    with Fleet([ECHO], log_dir=tmp_path, stop_grace=5) as fleet:
        target = fleet.target("echo")
        first = fleet.children["echo"].process
        first.kill()
        first.wait()
        assert not _serving(target)
        child = fleet.restart("echo")
        assert child.process.pid != first.pid and child.process.poll() is None
        assert fleet.target("echo") == target and _serving(target)
        assert child.serving_after is not None
    assert child.process.returncode == 0


def test_children_die_with_a_killed_launcher(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess

    script = (
        "import sys, time; from pathlib import Path; from services.fleet import Fleet, ServiceSpec\n"
        "f = Fleet([ServiceSpec('echo', 'tests.foundation.echo_service', 'ECHO_', port=0, metrics_port=0)], "
        f"log_dir=Path({str(tmp_path)!r}))\n"
        "f.start(); print(f.children['echo'].process.pid, flush=True); time.sleep(60)\n"
    )
    launcher = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path.cwd())
    assert launcher.stdout is not None
    pid = int(launcher.stdout.readline())
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[1:3] == [b"-m", b"tests.foundation.echo_service"], "the container's command"
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("the service outlived its SIGKILLed launcher")
