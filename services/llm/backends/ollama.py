"""Ollama through its official async client, streaming, with ``keep_alive``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import ollama

from services.llm.backends.base import BackendError, ChatMessage, Delta, Finish, GenerationParams
from services.runtime.logging import get_logger

log = get_logger(__name__)


class OllamaBackend:
    """A model served by an Ollama server."""

    name = "ollama"

    def __init__(self, host: str, model: str, *, keep_alive: str, timeout_seconds: float, warm_up: bool = True) -> None:
        self.host = host
        self.model = model
        self.keep_alive = keep_alive
        self.warm_up = warm_up
        # httpx applies this to connecting and to each read: a server that stops sending for
        # this long fails the call (the engine also bounds the wait for the first token).
        self._client = ollama.AsyncClient(host=host, timeout=timeout_seconds)
        self._warm_task: asyncio.Task[None] | None = None

    async def load(self) -> None:
        # In the background: loading a 7B model can take longer than the service should stay
        # NOT_SERVING, and the chain answers with the next backend meanwhile.
        if self.warm_up and self._warm_task is None:
            self._warm_task = asyncio.create_task(self._warm())

    async def _warm(self) -> None:
        # An empty chat makes Ollama load the model and keep it for keep_alive. Best effort:
        # Ollama may start after us.
        try:
            await self._client.chat(model=self.model, messages=[], keep_alive=self.keep_alive)
            log.info("ollama model loaded", host=self.host, model=self.model)
        except Exception as exc:  # noqa: BLE001 - any failure here only means "not ready yet"
            log.warning("ollama not ready at start-up", host=self.host, model=self.model, error=str(exc))

    async def close(self) -> None:
        if self._warm_task is not None:
            self._warm_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warm_task
        await self._client.close()  # type: ignore[no-untyped-call]

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncGenerator[Delta | Finish, None]:
        try:
            parts: Any = await self._client.chat(
                model=self.model,
                messages=[{"role": m.role, "content": m.content} for m in messages],
                stream=True,
                keep_alive=self.keep_alive,
                options={"num_predict": params.max_tokens, "temperature": params.temperature},
            )
        except Exception as exc:
            raise BackendError(f"ollama at {self.host}: {type(exc).__name__}: {exc}") from exc
        sent = 0
        try:
            while True:
                try:
                    part: Any = await anext(parts)
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    # Connection refused, timeout, a dropped connection, a line that is not
                    # JSON or not a chat chunk, or an error reported by Ollama.
                    raise BackendError(f"ollama at {self.host}: {type(exc).__name__}: {exc}") from exc
                content = part.message.content if part.message is not None else None
                if content:
                    sent += 1
                    yield Delta(content)
                if part.done:
                    if sent == 0:
                        raise BackendError(f"ollama at {self.host}: empty answer")
                    yield Finish(
                        "length" if part.done_reason == "length" else "stop",
                        prompt_tokens=part.prompt_eval_count or 0,
                        # Ollama reports only the tokens it read (its cache held the rest).
                        prompt_tokens_evaluated=part.prompt_eval_count or 0,
                        completion_tokens=part.eval_count or sent,
                    )
                    return
            raise BackendError(f"ollama at {self.host}: stream ended before the answer was done")
        finally:
            # Closing the stream closes the HTTP response, which tells Ollama to stop.
            await parts.aclose()
