"""Embedded llama.cpp (llama-cpp-python): streaming, prompt-prefix reuse, one model, one caller.

Prefix reuse: ``Llama.generate`` compares the new prompt's tokens with the tokens already in
the KV cache and only decodes the part after the longest common prefix. A conversation's
prompt is its previous prompt plus the previous answer plus the new turn, so a second turn
reads only its new tokens. Sessions that take turns would evict each other's cache; before
switching conversation the live cache is saved (the KV cells in use, ~28 KB per token for
the 1.5B model) and restored when that conversation comes back, for the few most recent ones.

Threads: llama.cpp calls block, so each generation runs in one worker thread. The model is
not re-entrant: an asyncio lock admits one generation at a time, a bounded number wait, and
the lock is released only when the worker thread has really finished, so a cancelled caller
never lets the next one touch the model while its thread still runs. Between tokens the
thread checks whether the caller has gone away (prompt decoding itself cannot be
interrupted; it takes at most a few seconds). Tokens reach the caller through a
``services.runtime.streams.Channel``, the thread's failure after them.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.llm.backends.base import BackendError, ChatMessage, Delta, Finish, GenerationParams
from services.runtime.errors import InvalidArgument, ResourceExhausted
from services.runtime.logging import get_logger
from services.runtime.streams import Channel, ChannelClosed, EndOfStream, producing

log = get_logger(__name__)


@dataclass
class RunStats:
    """What the last generation did (tests and diagnostics)."""

    prompt_tokens: int = 0
    prompt_tokens_evaluated: int = 0
    completion_tokens: int = 0
    cancelled: bool = False
    restored_snapshot: bool = False
    seconds: float = 0.0


@dataclass
class _Snapshot:
    tokens: list[int]
    state: bytes


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class LlamaCppBackend:
    """A GGUF model run in-process."""

    name = "llamacpp"

    def __init__(
        self,
        model_path: Path,
        model_name: str,
        *,
        n_ctx: int = 4096,
        n_batch: int = 256,
        n_threads: int = 2,
        n_gpu_layers: int = 0,
        max_waiting: int = 4,
        session_snapshots: int = 4,
        session_snapshot_bytes: int = 256 * 2**20,
    ) -> None:
        self.model = model_name
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.n_threads = n_threads
        self.n_gpu_layers = n_gpu_layers
        self.max_waiting = max_waiting
        self.session_snapshots = session_snapshots
        self.session_snapshot_bytes = session_snapshot_bytes
        self.last_run: RunStats | None = None
        self._llm: Any = None
        self._formatter: Any = None
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._running = threading.Event()
        # One worker thread: llama.cpp work is serialised anyway, and a fixed thread keeps
        # the model's thread-local state (and its CPU caches) in one place.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamacpp")
        self._live_key: str | None = None
        self._snapshots: OrderedDict[str, _Snapshot] = OrderedDict()
        # Caches of the primed system prompts: kept for the process's life (a few hundred kB
        # each), never evicted, restored by any conversation whose prompt starts with one.
        self._primes: dict[str, _Snapshot] = {}

    # ------------------------------------------------------------------ lifecycle
    async def load(self) -> None:
        if self._llm is not None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        started = time.perf_counter()
        llm: Any = llama_cpp.Llama(
            model_path=str(self.model_path),
            n_ctx=self.n_ctx,
            n_batch=self.n_batch,
            n_threads=self.n_threads,
            n_threads_batch=self.n_threads,
            n_gpu_layers=self.n_gpu_layers,
            verbose=False,
        )
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise BackendError(f"{self.model_path} has no chat template in its metadata; use an instruct model")
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=llm._model.token_get_text(llm.token_eos()),
            bos_token=llm._model.token_get_text(llm.token_bos()),
        )
        self._llm = llm
        # Touch every weight once so the first real answer does not pay for page faults.
        list(zip(range(1), llm.generate(llm.tokenize(b"Hello", add_bos=False), temp=0.0), strict=False))
        llm.reset()
        log.info("llamacpp loaded", model=self.model, seconds=round(time.perf_counter() - started, 2))

    async def close(self) -> None:
        async with self._lock:
            self._llm = None
            self._snapshots.clear()
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ helpers
    @property
    def running(self) -> bool:
        """True while a worker thread is generating."""
        return self._running.is_set()

    @property
    def snapshot_bytes(self) -> int:
        """Memory held by the saved session snapshots."""
        return sum(len(s.state) for s in self._snapshots.values())

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` for this model (tokenising only reads the vocabulary: thread-safe)."""
        if self._llm is None:
            return max(1, len(text) // 3)
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=False))

    def _prompt_tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        llm = self._llm
        prompt: str = self._formatter(messages=[{"role": m.role, "content": m.content} for m in messages]).prompt
        tokens: list[int] = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        return tokens

    def _fit(self, messages: Sequence[ChatMessage], max_tokens: int) -> list[int]:
        """Prompt tokens, dropping the oldest exchanges until prompt and answer fit the context."""
        msgs = list(messages)
        while True:
            tokens = self._prompt_tokens(msgs)
            if len(tokens) + max_tokens <= self.n_ctx:
                return tokens
            first = 1 if msgs and msgs[0].role == "system" else 0
            if len(msgs) - first <= 1:
                raise InvalidArgument(
                    f"the prompt ({len(tokens)} tokens) plus max_tokens ({max_tokens}) exceeds the "
                    f"model context ({self.n_ctx} tokens); shorten the system prompt or the text",
                    fields={"text": "too long for the model context"},
                )
            del msgs[first]
            if len(msgs) - first > 1 and msgs[first].role == "assistant":
                del msgs[first]  # whole exchanges go: an answer without its question misleads

    async def prime(self, system_prompts: Sequence[str]) -> None:
        """Reads each system prompt into the cache once and keeps that cache, so the first
        turn of any new conversation reads only its own words, whatever its language
        (without this only the last prompt read stays cached, and an English session after a
        French one reads the whole English system prompt before its first token)."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            for prompt in system_prompts:
                await loop.run_in_executor(self._executor, self._prime, prompt)

    def _prime(self, system_prompt: str) -> None:
        llm = self._llm
        tokens = self._prompt_tokens([ChatMessage("system", system_prompt), ChatMessage("user", ".")])
        # The shared prefix ends where the user's words begin: stop before the placeholder.
        placeholder = self._prompt_tokens([ChatMessage("system", system_prompt), ChatMessage("user", ",")])
        prefix = tokens[: common_prefix(tokens, placeholder)]
        self._save_live()
        llm.reset()
        llm.eval(prefix)
        self._primes[system_prompt] = self._snapshot()
        self._live_key = None

    async def reset_cache(self) -> None:
        """Forgets every cached prompt, primed ones included (benchmarks and tests: a cold
        start without reloading; ``prime`` again for the state after start-up)."""
        async with self._lock:
            if self._llm is not None:
                self._llm.reset()
            self._snapshots.clear()
            self._primes.clear()
            self._live_key = None

    # ------------------------------------------------------------------ generation
    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncGenerator[Delta | Finish, None]:
        if self._llm is None:
            raise BackendError("llama.cpp model is not loaded")
        if self._lock.locked() and self._waiting >= self.max_waiting:
            # A caller's problem, not the model's health: RESOURCE_EXHAUSTED, no fallback.
            raise ResourceExhausted(
                f"the embedded model is busy with {self._waiting + 1} request(s); retry shortly",
            )
        self._waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1
        loop = asyncio.get_running_loop()
        out: Channel[Delta | Finish] = Channel()
        try:
            future = loop.run_in_executor(self._executor, self._run, list(messages), params, out)
        except BaseException:
            self._lock.release()
            raise
        # Released when the thread is done, whatever happens to this generator.
        future.add_done_callback(lambda _f: self._lock.release())
        # The thread's end ends the stream, with its error if it failed. Shielded: leaving
        # the stream abandons the channel (the thread stops at its next token) but must not
        # cancel the future, whose end is what releases the lock.
        async with producing(out, asyncio.shield(future)):
            while True:
                try:
                    item = await out.receive()
                except EndOfStream:
                    return
                except InvalidArgument:
                    raise
                except Exception as exc:
                    raise BackendError(f"llama.cpp failed: {type(exc).__name__}: {exc}") from exc
                yield item
                if isinstance(item, Finish):
                    return

    def _run(self, messages: list[ChatMessage], params: GenerationParams, out: Channel[Delta | Finish]) -> None:
        self._running.set()
        stats = RunStats()
        self.last_run = stats  # filled in as it goes; final once ``running`` is False
        started = time.perf_counter()
        try:
            self._generate(messages, params, out, stats)
        except ChannelClosed:  # the caller left (or the loop closed) as a piece was handed over
            stats.cancelled = True
        finally:
            stats.seconds = time.perf_counter() - started
            self._running.clear()

    def _generate(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        out: Channel[Delta | Finish],
        stats: RunStats,
    ) -> None:
        import llama_cpp

        llm = self._llm
        tokens = self._fit(messages, params.max_tokens)
        stats.prompt_tokens = len(tokens)
        stats.restored_snapshot = self._switch_conversation(params.conversation, tokens)
        cached = common_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens)
        # What generate() should read: what follows the cached prefix (it re-reads the last
        # prompt token when the whole prompt is cached, to get fresh logits). Replaced below
        # by llama.cpp's own count once the prompt is decoded.
        stats.prompt_tokens_evaluated = len(tokens) - min(cached, len(tokens) - 1)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = llm._model.vocab
        ctx = llm._ctx.ctx
        llama_cpp.llama_perf_context_reset(ctx)
        first = True
        reason: str = "length"
        for token in llm.generate(tokens, temp=params.temperature, top_p=0.95, top_k=40, repeat_penalty=1.1):
            if first:
                first = False
                # The prompt tokens llama.cpp really decoded (its perf counter), so the
                # summary shows the cache at work rather than what we expected of it.
                decoded = int(llama_cpp.llama_perf_context(ctx).n_p_eval)
                if decoded > 0:
                    stats.prompt_tokens_evaluated = decoded
            if out.abandoned:  # the caller left
                stats.cancelled = True
                return
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                reason = "stop"
                break
            stats.completion_tokens += 1
            piece = decoder.decode(llm.detokenize([token]))
            if piece:
                out.send_threadsafe(Delta(piece))
            if stats.completion_tokens >= params.max_tokens:
                break
        tail = decoder.decode(b"", final=True)
        if tail:
            out.send_threadsafe(Delta(tail))
        out.send_threadsafe(
            Finish(
                "stop" if reason == "stop" else "length",
                prompt_tokens=stats.prompt_tokens,
                prompt_tokens_evaluated=stats.prompt_tokens_evaluated,
                completion_tokens=stats.completion_tokens,
            )
        )

    def _switch_conversation(self, key: str | None, tokens: list[int]) -> bool:
        """Saves the live cache of the conversation being left and restores the one coming back.

        Returns True when a saved cache was restored.
        """
        llm = self._llm
        if key != self._live_key:
            if self.session_snapshots > 0:
                self._save_live()
            self._live_key = key
            own = self._snapshots.pop(key, None) if key is not None and self.session_snapshots > 0 else None
        else:
            own = None
        # The best cache to start from: the conversation's own, or a primed system prompt,
        # whichever shares the longest prefix with this prompt; the live one if it is as good.
        live = common_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens)
        candidates = [s for s in (own, *self._primes.values()) if s is not None]
        best = max(candidates, key=lambda snap: common_prefix(snap.tokens, tokens), default=None)
        if best is None or common_prefix(best.tokens, tokens) <= live:
            return False
        return self._restore(best)

    def _snapshot(self) -> _Snapshot:
        """The live KV cache and the tokens it holds."""
        import llama_cpp

        llm = self._llm
        ctx = llm._ctx.ctx
        size = llama_cpp.llama_state_get_size(ctx)
        buf = (ctypes.c_uint8 * int(size))()
        written = llama_cpp.llama_state_get_data(ctx, buf, size)
        return _Snapshot(llm.input_ids[: llm.n_tokens].tolist(), bytes(memoryview(buf)[: int(written)]))

    def _save_live(self) -> None:
        """Keeps the live conversation's cache among the snapshots (the oldest go first)."""
        if self._live_key is None or self._llm.n_tokens == 0 or self.session_snapshots <= 0:
            return
        self._snapshots[self._live_key] = self._snapshot()
        self._snapshots.move_to_end(self._live_key)
        while len(self._snapshots) > self.session_snapshots or self.snapshot_bytes > self.session_snapshot_bytes:
            self._snapshots.popitem(last=False)

    def _restore(self, snap: _Snapshot) -> bool:
        import llama_cpp

        llm = self._llm
        data = (ctypes.c_uint8 * len(snap.state)).from_buffer_copy(snap.state)
        if llama_cpp.llama_state_set_data(llm._ctx.ctx, data, len(snap.state)) != len(snap.state):
            llm.reset()
            return False
        n = len(snap.tokens)
        llm.input_ids[:n] = snap.tokens
        llm.n_tokens = n
        # The restored logits are not those of a live decode: make generate() decode again.
        llm._requires_eval = True
        return True
