"""What every backend offers the engine: a streamed chat completion."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation."""

    role: Role
    content: str


@dataclass(frozen=True)
class GenerationParams:
    """Options of one generation, already validated and defaulted."""

    max_tokens: int
    temperature: float
    language: str
    """ "fr" or "en": the canned reply is written in it."""
    conversation: str | None = None
    """Session id, when there is one: lets a backend keep that conversation's cache apart."""


@dataclass(frozen=True)
class Delta:
    """Next piece of the answer."""

    text: str


@dataclass(frozen=True)
class Finish:
    """End of a generation, with usage. Always the last item a backend yields."""

    reason: Literal["stop", "length", "fallback"]
    prompt_tokens: int = 0
    prompt_tokens_evaluated: int = 0
    completion_tokens: int = 0


class BackendError(Exception):
    """A backend failed in a way that says something about its health (counts for its breaker)."""


class Backend(Protocol):
    """A model behind the engine. ``stream`` yields ``Delta`` items then exactly one ``Finish``.

    Closing the iterator early (the caller went away) must stop the work promptly.
    """

    name: str
    model: str

    async def load(self) -> None:
        """Loads and warms the model; raises if it cannot serve."""
        ...

    async def close(self) -> None:
        """Releases the model and connections."""
        ...

    def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncGenerator[Delta | Finish, None]:
        """Answers the conversation (the last message is the user's)."""
        ...
