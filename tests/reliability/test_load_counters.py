"""bench.load's reading of the services' own counters over a level (``work``, ``work_per_turn``):
scraped from a real Prometheus endpoint, as the fleet's services serve them."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from bench.fleet import counter_deltas, fleet_counters, fleet_stats
from bench.load import settled_stats, work_line


@pytest.fixture
def served() -> Iterator[tuple[Any, Counter, Histogram]]:
    registry = CollectorRegistry()
    tokens = Counter("parole_llm_tokens", "tokens", ["kind"], registry=registry)
    decode = Histogram("parole_stt_decode_seconds", "decodes", ["kind"], registry=registry)
    Counter("parole_unrelated", "not asked for", registry=registry).inc()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    specs = [
        SimpleNamespace(name="llm", metrics_port=server.server_port),
        SimpleNamespace(name="stt", metrics_port=server.server_port),
        SimpleNamespace(name="tts", metrics_port=None),  # no endpoint: nothing read, no error
    ]
    try:
        yield SimpleNamespace(specs=specs), tokens, decode
    finally:
        server.shutdown()
        thread.join(5)


def test_a_level_reads_what_each_counter_grew_by(served: tuple[Any, Counter, Histogram]) -> None:
    fleet, tokens, decode = served
    wanted = {"llm": ("parole_llm_tokens",), "stt": ("parole_stt_decode_seconds",), "tts": ("parole_tts_x",)}
    tokens.labels(kind="prompt").inc(100)  # before the level: not counted
    before = fleet_counters(fleet, wanted)
    tokens.labels(kind="prompt").inc(40)
    tokens.labels(kind="completion").inc(12)  # a series first seen during the level
    decode.labels(kind="final").observe(0.5)
    decode.labels(kind="final").observe(0.25)
    after = fleet_counters(fleet, wanted)
    assert counter_deltas(before, after) == {
        "llm parole_llm_tokens_total{kind=prompt}": 40.0,
        "llm parole_llm_tokens_total{kind=completion}": 12.0,
        "stt parole_stt_decode_seconds_count{kind=final}": 2.0,
        "stt parole_stt_decode_seconds_sum{kind=final}": 0.75,
    }
    assert not any("unrelated" in k or k.startswith("tts") for k in after)


def test_a_service_that_does_not_answer_reads_as_nothing() -> None:
    gone = SimpleNamespace(specs=[SimpleNamespace(name="llm", metrics_port=9)])  # discard port: refused
    assert fleet_counters(gone, {"llm": ("parole_llm_tokens",)}) == {}  # type: ignore[arg-type]


def test_the_work_line_tells_prompt_tokens_from_tokens_read() -> None:
    """``kind=prompt`` must not also count ``kind=prompt_evaluated`` (a prefix of it)."""
    line = work_line(
        {
            "llm parole_llm_tokens_total{backend=llamacpp,kind=prompt}": 150.0,
            "llm parole_llm_tokens_total{backend=llamacpp,kind=prompt_evaluated}": 17.5,
            "llm parole_llm_tokens_total{backend=llamacpp,kind=completion}": 10.0,
            "llm parole_llm_generations_total{backend=llamacpp,outcome=stop}": 1.25,
            "orchestrator parole_speculative_turns_total{outcome=withdrawn}": 0.25,
            "orchestrator parole_speculative_turns_total{outcome=started}": 0.5,
            "tts parole_tts_synthesis_seconds_sum{engine=kokoro}": 2.5,
        }
    )
    assert "read 17.5 (of 150 in the prompt), written 10.0" in line
    assert "generations 1.25" in line
    assert "withdrawn 0.25" in line
    assert "synthesis kokoro 2.50 s" in line


async def test_descriptors_are_read_once_the_sessions_sockets_are_closed() -> None:
    """A service closes a finished session's sockets when it reads their end, later on a loaded
    machine: the level's descriptors are counted once they are back, or at the deadline, where
    one still open is kept and shows."""
    me = SimpleNamespace(children={"orchestrator": SimpleNamespace(process=SimpleNamespace(pid=os.getpid()))})
    before = {n: s.fds for n, s in fleet_stats(me).items()}  # type: ignore[arg-type]
    lingering = os.open(os.devnull, os.O_RDONLY)
    asyncio.get_running_loop().call_later(0.3, os.close, lingering)
    settled = await settled_stats(me, before, timeout=10.0)  # type: ignore[arg-type]
    assert settled["orchestrator"].fds == before["orchestrator"]

    leaked = os.open(os.devnull, os.O_RDONLY)
    try:
        kept = await settled_stats(me, before, timeout=0.3)  # type: ignore[arg-type]
        assert kept["orchestrator"].fds == before["orchestrator"] + 1
    finally:
        os.close(leaked)
