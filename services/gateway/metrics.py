"""Prometheus metrics of the gateway (served by the runtime on ``server.metrics_port``).

Labels are the API surface and a fixed endpoint name, never a path or a session id.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "parole_gateway_requests_total",
    "HTTP API requests by endpoint and status code.",
    ["endpoint", "status"],
)
REQUEST_SECONDS = Histogram(
    "parole_gateway_request_seconds",
    "Seconds to the response headers of an HTTP API request (streams go on after).",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
REALTIME_SESSIONS = Gauge("parole_gateway_realtime_sessions", "Realtime WebSocket sessions open.")
REALTIME_EVENTS = Counter(
    "parole_gateway_realtime_events_total",
    "Realtime events by direction (in: from the client, out: to it) and type.",
    ["direction", "type"],
)
REALTIME_RELAY_SECONDS = Histogram(
    "parole_gateway_realtime_relay_seconds",
    "Seconds from a Converse answer-audio message reaching the gateway to its first Realtime audio "
    "delta sent: what the gateway adds to the conversation's time to first audio, besides one hop.",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
)
REALTIME_ERRORS = Counter(
    "parole_gateway_realtime_errors_total", "Realtime error events sent, by error code.", ["code"]
)
WYOMING_REQUESTS = Counter(
    "parole_gateway_wyoming_requests_total",
    "Wyoming transcriptions and syntheses by server (asr, tts) and outcome.",
    ["server", "outcome"],
)
WYOMING_CONNECTIONS = Gauge("parole_gateway_wyoming_connections", "Wyoming connections open.", ["server"])
