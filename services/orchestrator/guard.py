"""The three services a conversation calls, and how a turn calls the two it depends on:
under a circuit breaker, with every failure turned into a reason the turn can degrade on
(a canned reply when the LLM fails, text only when the TTS does) instead of an exception."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import grpc

from parole.llm.v1 import llm_pb2_grpc
from parole.stt.v1 import stt_pb2_grpc
from parole.tts.v1 import tts_pb2, tts_pb2_grpc
from services.orchestrator.admission import Admission
from services.runtime.resilience import BreakerOpen, Breakers

# Status codes that say a service (or the way to it) is down or sick: they count against its
# breaker. The others (a request it refused, a busy model, a turn cancelled by a barge-in)
# say nothing about its health.
OUTAGE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
)


@dataclass
class Stubs:
    """Clients of the three services, and the breakers of the two a turn calls (shared by
    every session: one outage opens them for all)."""

    stt: stt_pb2_grpc.SttServiceAsyncStub
    llm: llm_pb2_grpc.LlmServiceAsyncStub
    tts: tts_pb2_grpc.TtsServiceAsyncStub
    breakers: Breakers = field(default_factory=lambda: Breakers("orchestrator"))
    phrases: dict[tuple[str, str, int, str], tts_pb2.AudioChunk] = field(default_factory=dict)
    """The wait notice as spoken, by voice, language, rate and text (a few kB each)."""
    admission: Admission = field(default_factory=lambda: Admission(2, notice_after=2.5, give_up_after=20.0))
    """The answer slots every session takes its turns' answers from. A turn is answered ahead
    of its final only when none is taken: a guess must never make another session's real turn
    wait or take cores from its answer."""


# What gRPC's client library reports when a request fails to be written because the connection
# under the call broke (a TCP reset mid-stream): it ends the call with INTERNAL before any
# status came from the service. The service did not fail; the way to it did.
CLIENT_WRITE_FAILED = "Internal error from Core"


def status_of(err: grpc.aio.AioRpcError) -> grpc.StatusCode:
    """The call's status as the orchestrator reports it: a request stream whose connection broke
    under it is UNAVAILABLE (as a read on the same broken connection reports), not INTERNAL,
    which stays what the service itself said went wrong."""
    if err.code() == grpc.StatusCode.INTERNAL and (err.details() or "") == CLIENT_WRITE_FAILED:
        return grpc.StatusCode.UNAVAILABLE
    return err.code()


class Failed(NamedTuple):
    """Why a stage call failed: a status from the service, or its breaker standing open."""

    code: str
    details: str


async def guarded(breakers: Breakers, name: str, call: Callable[[], Awaitable[None]]) -> Failed | None:
    """Runs ``call`` under the service's breaker. Outages count against it; a breaker that
    stands open fails at once without calling. Returns what went wrong, or None."""
    try:
        async with await breakers.guard(name):
            try:
                await call()
            except grpc.aio.AioRpcError as err:
                if err.code() in OUTAGE_CODES:
                    raise
                return Failed(status_of(err).name, err.details() or "")
    except BreakerOpen:
        return Failed(
            "UNAVAILABLE",
            f"{name} service not called: its circuit breaker is open, one turn retries it every {breakers.ttl:g} s",
        )
    except grpc.aio.AioRpcError as err:
        return Failed(status_of(err).name, err.details() or "")
    return None
