"""LLM service: streamed answers with per-session history over a chain of backends."""
