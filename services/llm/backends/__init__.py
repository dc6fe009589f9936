"""Backends of the fallback chain. Only these modules import llama_cpp or ollama."""

from services.llm.backends.base import (
    Backend,
    BackendError,
    ChatMessage,
    Delta,
    Finish,
    GenerationParams,
    Role,
)

__all__ = ["Backend", "BackendError", "ChatMessage", "Delta", "Finish", "GenerationParams", "Role"]
