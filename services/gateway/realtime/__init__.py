"""The OpenAI Realtime protocol (GA event names) over the orchestrator's ``Converse``.

One WebSocket is one ``Converse`` session, held by the shared client (``client.conversation``).
Client events become Converse requests (24 kHz PCM resampled to 16 kHz, typed turns,
interrupts); Converse events become server events (speech activity, transcripts, response
text and audio). Turn detection is the fleet's own: every final transcript is answered, so a
response starts by itself after the user stops speaking, and barge-in (speech during an
answer) cancels it. A bad client event gets an ``error`` event; the socket stays open.

Modules: ``protocol`` (constants, ids, client-event parsing and validation), ``state`` (the
session's configuration and ``session.update``, a response's progress), ``audio`` (24 kHz to
16 kHz and back), ``core`` (shared session state, sending events), ``relay`` (Converse events
to server events) and ``session`` (the session and the ``/v1/realtime`` endpoint).
"""

from __future__ import annotations

from services.gateway.realtime.protocol import CLIENT_EVENTS, RATE, latency_object
from services.gateway.realtime.session import RealtimeSession, realtime_endpoint
from services.gateway.realtime.state import ResponseState, SessionState

__all__ = [
    "CLIENT_EVENTS",
    "RATE",
    "RealtimeSession",
    "ResponseState",
    "SessionState",
    "latency_object",
    "realtime_endpoint",
]
