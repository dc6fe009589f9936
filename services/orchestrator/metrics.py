"""The orchestrator's Prometheus metrics, all in one place. Labels stay low-cardinality: no
session or turn ids (those are on each turn's ``TurnLatency`` record instead). The breakers'
states are exported by ``services.runtime.resilience`` (``parole_breaker_state``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TURN_LATENCY = Histogram(
    "parole_turn_latency_seconds",
    "Seconds from the end of the user's speech to each point of the answer.",
    ["stage"],
    buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 30, 60),
)
TURNS = Counter("parole_turns_total", "Conversation turns by outcome.", ["outcome"])
STAGE_ERRORS = Counter("parole_stage_errors_total", "Stage failures seen by the orchestrator.", ["stage", "degraded"])
SESSIONS = Gauge("parole_sessions_active", "Conversations in progress.")
GATED_AUDIO = Counter(
    "parole_gated_audio_seconds_total", "Microphone audio ignored while the answer played (anti-feedback)."
)
SPECULATIVE_TURNS = Counter(
    "parole_speculative_turns_total",
    "Turns answered ahead on a pause's transcript: started, then confirmed by the final or withdrawn.",
    ["outcome"],
)
CONTINUATIONS = Counter(
    "parole_turn_continuations_total",
    "Speech resuming right after a spoken turn, before its answer was heard: the answer held, "
    "then merged with the words that followed or released (the speech was only noise).",
    ["outcome"],
)
SLOTS_BUSY = Gauge("parole_answer_slots_busy", "Turns the language model is answering now (admission slots taken).")
TURNS_WAITING = Gauge("parole_turns_waiting", "Turns waiting for an answer slot (the machine is full).")
EXPECTED_WAIT = Gauge(
    "parole_expected_wait_seconds",
    "Seconds a turn arriving now should expect to wait for its answer slot (queue ahead x recent slot time).",
)
SATURATED = Gauge(
    "parole_saturated",
    "1 while a new conversation would be refused: a new turn's expected wait is past the give-up budget.",
)
ADMISSION_WAIT = Histogram(
    "parole_admission_wait_seconds",
    "Seconds turns waited for an answer slot.",
    buckets=(0.01, 0.1, 0.5, 1, 2, 3, 5, 10, 20, 30, 60),
)
WAIT_NOTICES = Counter(
    "parole_wait_notices_total", "Spoken 'one moment' notices, and turns declined as too busy.", ["kind"]
)
REFUSED_SESSIONS = Counter(
    "parole_sessions_refused_total", "Conversations refused at Converse start (RESOURCE_EXHAUSTED).", ["reason"]
)
