"""Embedded llama.cpp (llama-cpp-python): streaming, prompt-prefix reuse, one model, one or a
few callers at once.

Prefix reuse: ``Llama.generate`` compares the new prompt's tokens with the tokens already in
the KV cache and only decodes the part after the longest common prefix. A conversation's
prompt is its previous prompt plus the previous answer plus the new turn, so a second turn
reads only its new tokens. Sessions that take turns would evict each other's cache; before
switching conversation the live cache is saved (the KV cells in use, ~28 KB per token for
the 1.5B model) and restored when that conversation comes back, for the few most recent ones.

Parallel answers: ``parallel`` contexts (each a KV cache and a worker thread over the same
memory-mapped weights, which the OS shares) answer that many conversations at once. On two
cores two contexts give ~1.1x the tokens per second of one at a time (decoding is bound by
memory bandwidth, which they share), but the second conversation's first token comes after
its own prompt, not after the whole first answer. A conversation goes back to the context
that holds its cache when that one is free.

First tokens first: while one answer reads its prompt or writes its first tokens, the others,
past theirs, step aside between two tokens (``scheduling``): someone is waiting in silence for
those first words, and the later words of the others have the time their first ones take to
play.

Threads: llama.cpp calls block, so each generation runs in its context's worker thread. A
context is not re-entrant: it is taken by one generation at a time, a bounded number wait
for one, and it is given back only when the worker thread has really finished, so a
cancelled caller never lets the next one touch it while its thread still runs. Between tokens the
thread checks whether the caller has gone away (prompt decoding itself cannot be
interrupted; it takes at most a few seconds). Tokens reach the caller through a
``services.runtime.streams.Channel``, the thread's failure after them.

The contexts and the prompt caches they share (session snapshots, primed system prompts) are
in ``llamacpp_cache.py``; these two are the only modules of the LLM service that import
``llama_cpp``.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.llm.backends.base import BackendError, ChatMessage, Delta, Finish, GenerationParams
from services.llm.backends.llamacpp_cache import Context, PromptCache, common_prefix, shift_out
from services.llm.backends.scheduling import FirstTokensFirst, Run
from services.llm.metrics import STEPPED_ASIDE
from services.runtime.errors import InvalidArgument, ResourceExhausted
from services.runtime.logging import get_logger
from services.runtime.openmp import VARIABLE, load_with_sleeping_threads
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
    shifted_tokens: int = 0
    """Tokens of dropped history taken out of the cache (``shift_out``) instead of rereading."""
    paused_seconds: float = 0.0
    """Time it stepped aside for other answers' first tokens (``scheduling``)."""
    seconds: float = 0.0


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
        parallel: int = 1,
        max_waiting: int = 4,
        session_snapshots: int = 4,
        session_snapshot_bytes: int = 256 * 2**20,
        shift_history: bool = True,
        sleeping_threads: bool = True,
        first_tokens: int = 12,
        first_tokens_max_pause: float = 1.0,
    ) -> None:
        self.model = model_name
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.n_threads = n_threads
        self.n_gpu_layers = n_gpu_layers
        self.parallel = parallel
        self.max_waiting = max_waiting
        self.session_snapshots = session_snapshots
        self.session_snapshot_bytes = session_snapshot_bytes
        self.shift_history = shift_history
        self.sleeping_threads = sleeping_threads
        self.last_run: RunStats | None = None
        self._contexts: list[Context] = []
        self._formatter: Any = None
        self._waiting = 0
        self._freed = asyncio.Event()
        """Set when a context is given back (waiting generations look again)."""
        # Parallel generations: their first tokens before the others' later ones, and each
        # one's share of the threads (``scheduling``).
        self._order = FirstTokensFirst(first_tokens, first_tokens_max_pause)
        # Session snapshots and primes are shared by the contexts (a state saved by one loads
        # into any other: same model, same size), and touched by their threads.
        self._shared = threading.Lock()
        self._cache = PromptCache(self._shared)

    # ------------------------------------------------------------------ lifecycle
    @property
    def _llm(self) -> Any:
        """The first context's model: tokenising and metadata (the same in every context)."""
        return self._contexts[0].llm if self._contexts else None

    async def load(self) -> None:
        if self._contexts:
            return
        if self.sleeping_threads and not load_with_sleeping_threads("llama_cpp"):
            log.warning(
                "llama.cpp's threads will spin at barriers, slowing the other services on shared cores",
                policy=os.environ.get(VARIABLE, "(llama_cpp imported before the policy was set)"),
                fix=f"unset {VARIABLE}, or set it to PASSIVE",
            )
        loop = asyncio.get_running_loop()
        for i in range(self.parallel):
            # One worker thread per context: a fixed thread keeps its thread-local state (and
            # its CPU caches) in one place.
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llamacpp-{i}")
            llm = await loop.run_in_executor(executor, self._load)
            self._contexts.append(Context(llm, executor))

    def _load(self) -> Any:
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
        # Touch every weight once so the first real answer does not pay for page faults.
        list(zip(range(1), llm.generate(llm.tokenize(b"Hello", add_bos=False), temp=0.0), strict=False))
        llm.reset()
        log.info("llamacpp loaded", model=self.model, seconds=round(time.perf_counter() - started, 2))
        return llm

    async def close(self) -> None:
        contexts, self._contexts = self._contexts, []
        for c in contexts:
            c.executor.shutdown(wait=True)  # a running generation ends first
        self._cache.snapshots.clear()

    # ------------------------------------------------------------------ helpers
    @property
    def running(self) -> bool:
        """True while a worker thread is generating."""
        return self._order.active > 0

    @property
    def snapshot_bytes(self) -> int:
        """Memory held by the saved session snapshots."""
        return self._cache.snapshot_bytes

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
        French one reads the whole English system prompt before its first token). Any
        context restores them."""
        c = await self._take(None)
        try:
            loop = asyncio.get_running_loop()
            for prompt in system_prompts:
                await loop.run_in_executor(c.executor, self._prime, c, prompt)
        finally:
            self._give_back(c)

    def _prime(self, c: Context, system_prompt: str) -> None:
        llm = c.llm
        tokens = self._prompt_tokens([ChatMessage("system", system_prompt), ChatMessage("user", ".")])
        # The shared prefix ends where the user's words begin: stop before the placeholder.
        placeholder = self._prompt_tokens([ChatMessage("system", system_prompt), ChatMessage("user", ",")])
        prefix = tokens[: common_prefix(tokens, placeholder)]
        self._save_live(c)
        llm.reset()
        llm.eval(prefix)
        self._cache.prime(c, system_prompt)
        c.live_key = None

    async def reset_cache(self) -> None:
        """Forgets every cached prompt, primed ones included (benchmarks and tests: a cold
        start without reloading; ``prime`` again for the state after start-up)."""
        taken = [await self._take(None) for _ in self._contexts]
        try:
            for c in taken:
                c.llm.reset()
                c.live_key = None
            self._cache.clear()
        finally:
            for c in taken:
                self._give_back(c)

    async def _take(self, key: str | None) -> Context:
        """A free context, waiting for one (within ``max_waiting``): the one holding this
        conversation's cache if it is free, else the least recently used."""
        while True:
            free = [c for c in self._contexts if not c.busy]
            if free:
                c = next((c for c in free if key is not None and c.live_key == key), None)
                c = c or min(free, key=lambda c: c.used)
                c.busy, c.used = True, time.monotonic()
                return c
            if self._waiting >= self.max_waiting:
                # A caller's problem, not the model's health: RESOURCE_EXHAUSTED, no fallback.
                raise ResourceExhausted(
                    f"the embedded model is busy with {len(self._contexts) + self._waiting} request(s); retry shortly",
                )
            self._waiting += 1
            self._freed.clear()
            try:
                await self._freed.wait()
            finally:
                self._waiting -= 1

    def _give_back(self, c: Context) -> None:
        c.busy = False
        self._freed.set()

    # ------------------------------------------------------------------ generation
    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncGenerator[Delta | Finish, None]:
        if not self._contexts:
            raise BackendError("llama.cpp model is not loaded")
        c = await self._take(params.conversation)
        loop = asyncio.get_running_loop()
        out: Channel[Delta | Finish] = Channel()
        try:
            future = loop.run_in_executor(c.executor, self._run, c, list(messages), params, out)
        except BaseException:
            self._give_back(c)
            raise
        # Given back when the thread is done, whatever happens to this generator.
        future.add_done_callback(lambda _f: self._give_back(c))
        # The thread's end ends the stream, with its error if it failed. Shielded: leaving
        # the stream abandons the channel (the thread stops at its next token) but must not
        # cancel the future, whose end is what gives the context back.
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

    def _run(
        self, c: Context, messages: list[ChatMessage], params: GenerationParams, out: Channel[Delta | Finish]
    ) -> None:
        run = self._order.begin()
        stats = RunStats()
        self.last_run = stats  # filled in as it goes; final once ``running`` is False
        started = time.perf_counter()
        try:
            self._generate(c, messages, params, out, stats, run)
        except ChannelClosed:  # the caller left (or the loop closed) as a piece was handed over
            stats.cancelled = True
        finally:
            stats.seconds = time.perf_counter() - started
            stats.paused_seconds = run.paused_seconds
            self._order.end(run)
            if run.pauses:
                STEPPED_ASIDE.observe(run.paused_seconds)

    def _generate(
        self,
        c: Context,
        messages: list[ChatMessage],
        params: GenerationParams,
        out: Channel[Delta | Finish],
        stats: RunStats,
        run: Run,
    ) -> None:
        import llama_cpp

        llm = c.llm
        tokens = self._fit(messages, params.max_tokens)
        stats.prompt_tokens = len(tokens)
        was_live = params.conversation is not None and c.live_key == params.conversation
        stats.restored_snapshot = self._switch_conversation(c, params.conversation, tokens)
        # Only a conversation's own cache is shifted: another's tokens, moved under this
        # prompt, would leave a trace of that conversation in this answer.
        if self.shift_history and (was_live or stats.restored_snapshot):
            stats.shifted_tokens = shift_out(c, tokens)
        cached = common_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens)
        # What generate() should read: what follows the cached prefix (it re-reads the last
        # prompt token when the whole prompt is cached, to get fresh logits). Replaced below
        # by llama.cpp's own count once the prompt is decoded.
        stats.prompt_tokens_evaluated = len(tokens) - min(cached, len(tokens) - 1)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = llm._model.vocab
        ctx = llm._ctx.ctx
        llama_cpp.llama_perf_context_reset(ctx)
        threads = self._share_cores(ctx, run, 0)
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
            # The token is out; before the next one, a tail steps aside for another answer's
            # first tokens, then takes its share of the threads as they are now.
            self._order.after_token(run, stats.completion_tokens)
            if out.abandoned:
                stats.cancelled = True
                return
            threads = self._share_cores(ctx, run, threads)
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

    def _share_cores(self, ctx: Any, run: Run, threads: int) -> int:
        """The threads this context should use now: all of ``n_threads`` alone, an equal share
        while other contexts generate too (their threads would otherwise outnumber the cores
        and spin against each other, and against the speech services), an answer's first
        tokens sharing only with other first tokens. Returns the count set."""
        import llama_cpp

        want = self._order.threads(run, self.n_threads)
        if want != threads:
            llama_cpp.llama_set_n_threads(ctx, want, want)
        return want

    def _switch_conversation(self, c: Context, key: str | None, tokens: list[int]) -> bool:
        """Saves the live cache of the conversation being left and restores the one coming back
        (within ``session_snapshots`` and ``session_snapshot_bytes`` as they are now).

        Returns True when a saved cache was restored.
        """
        return self._cache.switch_conversation(c, key, tokens, self.session_snapshots, self.session_snapshot_bytes)

    def _save_live(self, c: Context) -> None:
        """Keeps the context's live conversation cache among the snapshots (the oldest go first)."""
        self._cache.save_live(c, self.session_snapshots, self.session_snapshot_bytes)
