"""The fleet launcher with a real subprocess service (the runtime's echo service)."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import grpc
import pytest

from services.fleet import Fleet, FleetError, ServiceSpec, free_port
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
        with pytest.raises(FleetError, match=f"ports already in use: echo :{port}") as caught:
            fleet.start()
    # It names who holds the port: this test's process.
    assert f"held by pid {os.getpid()}" in str(caught.value)
    assert not (tmp_path / "echo.log").exists()


def test_a_live_fleet_is_named_as_one(tmp_path: Path) -> None:
    with Fleet([ECHO], log_dir=tmp_path / "first", stop_grace=5) as first:
        port = first.specs[0].port
        second = Fleet([ECHO], ports={"echo": port}, metrics_ports={"echo": 0}, log_dir=tmp_path / "second")
        with pytest.raises(
            FleetError, match=f"echo :{port} \\(held by another Parole fleet, pid {first.children['echo'].process.pid}"
        ):
            second.start()
        assert _serving(first.target("echo")), "the refused start left the live fleet alone"


def _time_wait(port: int) -> bool:
    """A connection on local ``port`` is in TIME-WAIT (state 06 in /proc/net/tcp)."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(f[3] == "06" and int(f[1].rsplit(":", 1)[1], 16) == port for f in (line.split() for line in lines))


def test_starting_again_right_after_a_stop_is_not_refused(tmp_path: Path) -> None:
    fleet = Fleet([ECHO], ports={"echo": free_port()}, log_dir=tmp_path, stop_grace=5)
    with fleet, grpc.insecure_channel(fleet.target("echo")) as channel:
        assert status_sync(channel, timeout=10) == SERVING
    again = Fleet(
        [ECHO],
        ports={"echo": fleet.specs[0].port},
        metrics_ports={"echo": fleet.specs[0].metrics_port},
        log_dir=tmp_path,
    )
    with again:
        assert _serving(again.target("echo"))


def test_time_wait_leftovers_of_a_closed_server_do_not_count_as_a_fleet(tmp_path: Path) -> None:
    # What a stopped fleet leaves behind: its listening socket is gone, but connections it
    # closed first stay in TIME-WAIT on its port for a minute. A plain bind() failed on them.
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do (gRPC too)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            accepted.close()  # the server hangs up first: its end goes to TIME-WAIT
            assert client.recv(1) == b""
    assert _time_wait(port), "no TIME-WAIT on the port: the test would prove nothing"
    fleet = Fleet([ECHO], ports={"echo": port}, log_dir=tmp_path, stop_grace=5)
    with fleet:
        assert _serving(fleet.target("echo"))
