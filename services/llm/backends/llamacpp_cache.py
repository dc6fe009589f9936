"""The embedded llama.cpp backend's per-context decoding state: its contexts (a KV cache and a
worker thread each) and the prompt caches they share, session snapshots and primed system
prompts, saved from and restored into a context's KV cache.

Separate from ``llamacpp.py`` so that the backend module keeps the model's lifecycle, the
context scheduling and the generation loop, and this one what a context's cache holds and how
it is saved, chosen and restored. Like ``llamacpp.py``, and unlike anything outside
``services/llm/backends``, it imports the model library (``llama_cpp``, for the KV cache's
state calls).
"""

from __future__ import annotations

import ctypes
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


@dataclass
class Snapshot:
    tokens: list[int]
    state: bytes


@dataclass(eq=False)
class Context:
    """One KV cache over the shared weights, with the thread that runs it."""

    llm: Any
    executor: ThreadPoolExecutor
    live_key: str | None = None
    """The conversation whose tokens its cache holds."""
    busy: bool = False
    """Taken by a generation (until its thread is done)."""
    used: float = 0.0
    """When it was last taken (the least recently used goes to a new conversation)."""


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


MIN_SHIFT_MATCH = 16
"""Cached tokens that must follow a dropped block, identical, for shifting to be worth it."""


def dropped_block(cached: Sequence[int], tokens: Sequence[int]) -> tuple[int, int] | None:
    """Where ``tokens`` reads as ``cached`` with one block taken out: ``(start, end)`` of that
    block in ``cached``, where ``cached[:start]`` is the common prefix and ``cached[end:]``
    continues ``tokens`` from there for the most tokens (at least ``MIN_SHIFT_MATCH``; the
    cache's tail may differ, e.g. a generated answer that the history tokenizes otherwise).
    None otherwise.

    This is a conversation whose oldest exchanges fell out of the history window: the system
    prompt stays, the first exchanges go, the rest is the same text."""
    start = common_prefix(cached, tokens)
    if start >= len(cached) or start >= len(tokens):
        return None
    rest = tokens[start:]
    best, best_end = MIN_SHIFT_MATCH - 1, None
    for end in range(start + 1, len(cached) - MIN_SHIFT_MATCH + 1):
        if cached[end] == rest[0]:
            match = common_prefix(cached[end:], rest)
            if match > best:
                best, best_end = match, end
    return None if best_end is None else (start, best_end)


def shift_out(c: Context, tokens: Sequence[int]) -> int:
    """When the context's cache holds ``tokens`` but for one block further back (the oldest
    exchanges of a trimmed history), takes that block out of the KV cache and moves what
    follows back into its place, so the prompt reads on from the cache instead of from the
    system prompt. Returns the tokens removed (0: no such block, or the cache cannot shift).

    The moved keys are rotated to their new positions (RoPE), but were computed while the
    removed tokens were still in view: the model keeps a faint trace of the dropped exchanges,
    as llama.cpp's own context shift does. Rereading ~600 tokens of history costs 4-5 s on two
    cores, at every turn once the window is full."""
    import llama_cpp

    llm = c.llm
    cached = llm.input_ids[: llm.n_tokens].tolist()
    block = dropped_block(cached, tokens)
    if block is None:
        return 0
    start, end = block
    memory = llama_cpp.llama_get_memory(llm._ctx.ctx)
    if not llama_cpp.llama_memory_can_shift(memory):
        return 0
    if not llama_cpp.llama_memory_seq_rm(memory, 0, start, end):
        return 0
    llama_cpp.llama_memory_seq_add(memory, 0, end, -1, start - end)
    # Everything after the block moves back; generate() then finds the prompt's prefix in it
    # and drops whatever of the cache's tail differs.
    kept = cached[end:]
    llm.input_ids[start : start + len(kept)] = kept
    llm.n_tokens = start + len(kept)
    llm._requires_eval = True  # the logits are not those of the last token now
    return end - start


def snapshot(c: Context) -> Snapshot:
    """The context's live KV cache and the tokens it holds."""
    import llama_cpp

    llm = c.llm
    ctx = llm._ctx.ctx
    size = llama_cpp.llama_state_get_size(ctx)
    buf = (ctypes.c_uint8 * int(size))()
    written = llama_cpp.llama_state_get_data(ctx, buf, size)
    return Snapshot(llm.input_ids[: llm.n_tokens].tolist(), bytes(memoryview(buf)[: int(written)]))


def restore(c: Context, snap: Snapshot) -> bool:
    import llama_cpp

    llm = c.llm
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


class PromptCache:
    """Session snapshots and primed system prompts, shared by the contexts (a state saved by
    one loads into any other: same model, same size), and touched by their threads: under
    ``lock``, which the backend also counts its running generations under."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock
        self.snapshots: OrderedDict[str, Snapshot] = OrderedDict()
        # Caches of the primed system prompts: kept for the process's life (a few hundred kB
        # each), never evicted, restored by any conversation whose prompt starts with one.
        self.primes: dict[str, Snapshot] = {}

    @property
    def snapshot_bytes(self) -> int:
        """Memory held by the saved session snapshots."""
        return sum(len(s.state) for s in self.snapshots.values())

    def clear(self) -> None:
        """Forgets every snapshot and primed prompt."""
        self.snapshots.clear()
        self.primes.clear()

    def prime(self, c: Context, system_prompt: str) -> None:
        """Keeps the context's live cache (a system prompt just read) as that prompt's prime."""
        snap = snapshot(c)
        with self.lock:
            self.primes[system_prompt] = snap

    def save_live(self, c: Context, max_snapshots: int, max_bytes: int) -> None:
        """Keeps the context's live conversation cache among the snapshots (the oldest go first)."""
        if c.live_key is None or c.llm.n_tokens == 0 or max_snapshots <= 0:
            return
        snap = snapshot(c)
        with self.lock:
            self.snapshots[c.live_key] = snap
            self.snapshots.move_to_end(c.live_key)
            while len(self.snapshots) > max_snapshots or self.snapshot_bytes > max_bytes:
                self.snapshots.popitem(last=False)

    def switch_conversation(
        self, c: Context, key: str | None, tokens: list[int], max_snapshots: int, max_bytes: int
    ) -> bool:
        """Saves the live cache of the conversation being left and restores the one coming back.

        Returns True when a saved cache was restored.
        """
        llm = c.llm
        own = None
        if key != c.live_key:
            if max_snapshots > 0:
                self.save_live(c, max_snapshots, max_bytes)
            c.live_key = key
            if key is not None and max_snapshots > 0:
                with self.lock:
                    own = self.snapshots.pop(key, None)
        # The best cache to start from: the conversation's own, or a primed system prompt,
        # whichever shares the longest prefix with this prompt; the live one if it is as good.
        live = common_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens)
        with self.lock:
            candidates = [s for s in (own, *self.primes.values()) if s is not None]
        best = max(candidates, key=lambda snap: common_prefix(snap.tokens, tokens), default=None)
        if best is None or common_prefix(best.tokens, tokens) <= live:
            return False
        return restore(c, best)
