"""Prometheus metrics of the LLM service (base units; labels stay low-cardinality)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# A 7B model on a busy CPU can take well past 10 s to its first token; the original's
# timeout is 30 s, so the buckets go that far and beyond.
TTFT = Histogram(
    "parole_llm_time_to_first_token_seconds",
    "Seconds from the request to the first text delta, by the backend that answered.",
    ["backend"],
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 60),
)
TOKENS_PER_SECOND = Histogram(
    "parole_llm_tokens_per_second",
    "Generation speed after the first token.",
    ["backend"],
    buckets=(1, 2, 5, 10, 15, 20, 30, 50, 75, 100, 200, 500),
)
TOKENS = Counter(
    "parole_llm_tokens_total",
    "Tokens processed: prompt (whole prompt), prompt_evaluated (read, not cached), completion.",
    ["backend", "kind"],
)
GENERATIONS = Counter(
    "parole_llm_generations_total",
    "Generations by the backend that answered and how they ended (stop, length, fallback, error, cancelled).",
    ["backend", "outcome"],
)
FALLBACKS = Counter(
    "parole_llm_fallbacks_total",
    "Times a backend was skipped or failed before the first token and the next one was tried.",
    ["backend", "reason"],
)
WAITING = Gauge("parole_llm_requests_in_flight", "Generate calls in progress (running or waiting).")
STEPPED_ASIDE = Histogram(
    "parole_llm_stepped_aside_seconds",
    "Seconds an embedded-model answer paused for other answers' first tokens (0 for most).",
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3),
)
