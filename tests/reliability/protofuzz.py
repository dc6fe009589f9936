"""Hypothesis strategies derived from protobuf descriptors, and a runner that drives them
against live gRPC services from a worker thread.

Every field gets hostile values: numbers at and beyond their edges (NaN, infinities, the
largest and smallest integers), enum numbers no one declared, strings with control
characters, odd scripts and path tricks, random bytes. A ``base`` message makes a field keep
its valid value half the time, so fuzzing also reaches past the first validation.
"""

from __future__ import annotations

import collections
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf import message as pb_message
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

M = TypeVar("M", bound=pb_message.Message)

# How many generated calls each target makes. The CI-sized run uses the counts below (about
# 700 calls, a minute and a half on two shared cores). ``PAROLE_FUZZ_PER_CONTRACT=10000``
# (``make reliability FULL=1``) spreads that many calls over each contract's targets in the
# same proportions; ``PAROLE_FUZZ_SCALE`` multiplies every count instead.
CI_EXAMPLES: dict[str, dict[str, int]] = {
    "stt": {"Recognize": 60, "StreamingRecognize": 60, "audio bytes": 60, "ListEngines": 5},
    "llm": {
        "Generate": 50,
        "Generate (valid envelope)": 40,
        "ResetSession": 40,
        "GetSession": 40,
        "ListModels": 5,
        "AddExchange": 40,
    },
    "tts": {
        "Synthesize": 50,
        "SynthesizeStream": 30,
        "Synthesize (valid voice)": 40,
        "StreamingSynthesize": 50,
        "ListVoices": 20,
    },
    "orchestrator": {"Converse": 60},
    "gateway": {
        "chat completions": 30,
        "speech": 30,
        "transcriptions": 30,
        "raw bodies": 30,
        "realtime events": 30,
        "wyoming events": 30,
    },
}
EXHAUSTIBLE = frozenset({("stt", "ListEngines"), ("llm", "ListModels")})
"""Requests without fields: hypothesis has one message to send and stops there, so they take
no share of a contract's budget."""


def fuzz_examples(contract: str, target: str) -> int:
    """The number of generated calls for one target in this run (see CI_EXAMPLES)."""
    counts = CI_EXAMPLES[contract]
    ci = counts[target]
    per_contract = int(os.environ.get("PAROLE_FUZZ_PER_CONTRACT", "0"))
    if per_contract > 0:
        if (contract, target) in EXHAUSTIBLE:
            return ci
        share = sum(n for t, n in counts.items() if (contract, t) not in EXHAUSTIBLE)
        return math.ceil(ci * per_contract / share)
    return max(1, round(ci * float(os.environ.get("PAROLE_FUZZ_SCALE", "1"))))


# Status codes a service may answer bad input with. INTERNAL and UNKNOWN are bugs; a client
# deadline (DEADLINE_EXCEEDED here) means the service hung on the input.
EXPECTED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)

NASTY_STRINGS = [
    "",
    " ",
    "\x00",
    "\x00\x01\x02\x7f",
    "\t\n\r\x0b\x0c",
    "../../etc/passwd",
    "/etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e/%2e%2e/etc/passwd",
    "..\\..\\windows\\win.ini",
    "~/.ssh/id_rsa",
    "en",
    "fr",
    "EN",
    "zz",
    "en_US-joe-medium",
    "espeak-ng:fr",
    "base",
    "canned",
    "llamacpp",
    "\u202eevil\u202c",
    "\u200b\u200d\ufeff",
    "日本語のテキスト",
    "مرحبا بالعالم",
    "👩‍👩‍👧‍👦🎉" * 5,
    "Z̸̡̢a̵l̷g̶o̸",
    "\U0010ffff",
    "a" * 4097,
    "word " * 400,
    "%s%n%x{0}{}",
    "'; DROP TABLE sessions; --",
]

UINT32_EDGES = [0, 1, 2, 7, 8, 16, 8000, 16000, 22050, 24000, 44100, 48000, 96000, 2**31 - 1, 2**31, 2**32 - 1]
INT_EDGES = [0, 1, -1, 2**31 - 1, -(2**31)]


def text_strategy(max_size: int = 300) -> st.SearchStrategy[str]:
    """Random text (any code point but surrogates, control characters included) and known
    nasty strings."""
    return st.one_of(
        st.sampled_from(NASTY_STRINGS),
        st.text(st.characters(exclude_categories=["Cs"]), max_size=max_size),
        st.text(st.characters(codec="ascii"), max_size=max_size),
    )


def _scalar(f: FieldDescriptor, max_bytes: int) -> st.SearchStrategy[Any]:
    t = f.type
    if t == FieldDescriptor.TYPE_STRING:
        return text_strategy()
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=max_bytes)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_FLOAT,):
        return st.floats(width=32, allow_nan=True, allow_infinity=True)
    if t == FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if t == FieldDescriptor.TYPE_ENUM:
        # proto3 enums are open: undeclared numbers reach the service as they are.
        assert f.enum_type is not None
        declared = [v.number for v in f.enum_type.values]
        return st.one_of(st.sampled_from(declared), st.integers(-(2**31), 2**31 - 1))
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.one_of(st.sampled_from(UINT32_EDGES), st.integers(0, 2**32 - 1))
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.one_of(st.sampled_from([0, 1, 2**64 - 1]), st.integers(0, 2**64 - 1))
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return st.one_of(st.sampled_from(INT_EDGES), st.integers(-(2**31), 2**31 - 1))
    if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return st.integers(-(2**63), 2**63 - 1)
    raise TypeError(f"no strategy for field {f.full_name} of type {t}")


def _field(
    f: FieldDescriptor, depth: int, max_bytes: int, base: Any, overrides: Mapping[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[Any]:
    if f.name in overrides:
        value = overrides[f.name]
    elif f.type == FieldDescriptor.TYPE_MESSAGE:
        sub_base = base if isinstance(base, pb_message.Message) else None
        assert f.message_type is not None
        value = message(f.message_type, depth=depth + 1, max_bytes=max_bytes, base=sub_base)
    else:
        value = _scalar(f, max_bytes)
    if f.is_repeated:
        value = st.lists(value, max_size=4)
    if base is not None:
        # keep the valid value half the time, so later validation is reached too
        return st.one_of(st.just(base), value)
    return value


def message(
    desc: Descriptor,
    *,
    depth: int = 0,
    max_bytes: int = 4096,
    base: pb_message.Message | None = None,
    overrides: Mapping[str, st.SearchStrategy[Any]] | None = None,
) -> st.SearchStrategy[Any]:
    """Messages of type ``desc`` with random, often hostile, field values. Real oneofs get at
    most one member; ``base`` (a valid message) anchors fields half the time; ``overrides``
    replace the strategy of named top-level fields."""
    cls = GetMessageClass(desc)
    ov = overrides or {}
    if depth > 3:
        return st.just(cls())
    real_oneofs = [o for o in desc.oneofs if not (len(o.fields) == 1 and o.name == f"_{o.fields[0].name}")]
    in_oneof = {f.name for o in real_oneofs for f in o.fields}

    def base_of(f: FieldDescriptor) -> Any:
        if base is None:
            return None
        if f.is_repeated:
            return list(getattr(base, f.name)) or None
        if f.type == FieldDescriptor.TYPE_MESSAGE or f.has_presence:
            return getattr(base, f.name) if base.HasField(f.name) else None
        return getattr(base, f.name)

    optional = {f.name: _field(f, depth, max_bytes, base_of(f), ov) for f in desc.fields if f.name not in in_oneof}
    parts: list[st.SearchStrategy[dict[str, Any]]] = [st.fixed_dictionaries({}, optional=optional)]
    for o in real_oneofs:
        chosen = [st.fixed_dictionaries({f.name: _field(f, depth, max_bytes, base_of(f), ov)}) for f in o.fields]
        parts.append(st.one_of(st.just({}), *chosen))

    def build(dicts: tuple[dict[str, Any], ...]) -> pb_message.Message:
        kw: dict[str, Any] = {}
        for d in dicts:
            kw.update(d)
        return cls(**kw)

    anchored = st.tuples(*parts).map(build)
    if base is None:
        return anchored
    # Half the time: the valid message with exactly one field hostile, so each field's own
    # validation (and what lies past it) is reached, not just the first check that fails.
    return st.one_of(
        st.sampled_from(list(desc.fields)).flatmap(lambda f: _one_field(base, f, depth, max_bytes, ov)), anchored
    )


def _one_field(
    base: pb_message.Message, f: FieldDescriptor, depth: int, max_bytes: int, ov: Mapping[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[Any]:
    def put(value: Any) -> pb_message.Message:
        out = type(base)()
        out.CopyFrom(base)
        out.ClearField(f.name)
        if f.is_repeated:
            getattr(out, f.name).extend(value)
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(out, f.name).CopyFrom(value)
        else:
            setattr(out, f.name, value)
        return out

    return _field(f, depth, max_bytes, None, ov).map(put)


@dataclass
class Tally:
    """What one fuzz target tried and the codes it saw."""

    name: str
    examples: int = 0
    codes: collections.Counter[str] = field(default_factory=collections.Counter)
    unexpected: list[str] = field(default_factory=list)
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    seconds: float = 0.0
    memory: list[int] = field(default_factory=list)
    """Unexplained memory (see ``run_fuzz``'s ``memory``) at the start, half-way and end."""

    @property
    def growth_halves(self) -> tuple[int, int] | None:
        """Memory growth over the first and the second half of the calls. A leak grows in
        both alike; an allocator reaching its high-water mark (an arena sized to the largest
        input seen) grows in the first and levels off."""
        if len(self.memory) != 3:
            return None
        start, half, end = self.memory
        return half - start, end - half

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "examples": self.examples,
            "statuses": dict(self.codes),
            "unexpected": self.unexpected[:5],
            "top_refusals": dict(self.reasons.most_common(5)),
            "seconds": round(self.seconds, 1),
        }
        if (halves := self.growth_halves) is not None:
            out["memory_growth_halves_mb"] = [round(h / 2**20, 1) for h in halves]
        return out


async def outcome(call: Awaitable[Any] | Any) -> tuple[grpc.StatusCode, str, list[Any]]:
    """Runs a call to its end: (status code, details, responses). Streams are drained."""
    responses: list[Any] = []
    try:
        if hasattr(call, "__aiter__"):
            async for r in call:
                responses.append(r)
        else:
            responses.append(await call)
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or "", responses
    return grpc.StatusCode.OK, "", responses


def sync_outcome(start: Callable[[], Any]) -> tuple[grpc.StatusCode, str, list[Any]]:
    """Runs a blocking call (unary, or a response stream) to its end: (code, details,
    responses).

    The fuzzers call from a worker thread with the blocking client on purpose: with grpc.aio,
    a request stream whose writes race the server's early end of the call (INVALID_ARGUMENT on
    the config while audio is still going out) is reported as a local INTERNAL "Internal
    error from Core", hiding the status the server really sent."""
    responses: list[Any] = []
    try:
        call = start()
        if isinstance(call, pb_message.Message):
            responses.append(call)
        else:
            for r in call:
                responses.append(r)
    except grpc.RpcError as err:
        return err.code(), err.details() or "", responses  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, "", responses


def server_failures(service: str) -> int:
    """INTERNAL and UNKNOWN statuses the in-process servers recorded for ``service`` (the
    server's own count, independent of what a client makes of the call)."""
    from services.runtime.interceptors import HANDLED

    total = 0
    for metric in HANDLED.collect():
        for sample in metric.samples:
            labels = sample.labels
            if (
                sample.name.endswith("_total")
                and labels.get("grpc_service") == service
                and labels.get("grpc_code") in ("INTERNAL", "UNKNOWN")
            ):
                total += int(sample.value)
    return total


Check = Callable[[Any], tuple[grpc.StatusCode, str]]


BATCH = 1000
"""Generated calls per hypothesis run. Hypothesis keeps a tree of every example it generated in
a run (so as not to repeat one), which grows with each: ~95 MB over 3,334 streamed-request
examples, measured with the calls taken out. Long runs go in batches, each a fresh run with
its own seed, so the harness's memory stays that of one batch and what the memory check sees
growing is the services'."""


def run_fuzz(
    tally: Tally,
    strategy: st.SearchStrategy[Any],
    check: Check,
    max_examples: int,
    memory: Callable[[], int] | None = None,
) -> None:
    """Runs ``check`` (blocking calls; run this in a worker thread while the servers' loop
    runs) on ``max_examples`` generated values, in batches of ``BATCH``. Fails on the first
    status outside ``EXPECTED``, after hypothesis shrank it to a small example. ``memory``
    (bytes not held on purpose: RSS less the caches) is sampled before, half-way and after,
    into the tally."""

    def one(value: Any) -> None:
        tally.examples += 1
        if memory is not None and tally.examples == max_examples // 2 + 1:
            tally.memory.append(memory())
        code, details = check(value)
        tally.codes[code.name] += 1
        if code != grpc.StatusCode.OK:
            # the reason without the echoed value, so equal refusals count together
            reason = re.split(r"[:;'(0-9]", details, maxsplit=1)[0].strip()[:70]
            tally.reasons[f"{code.name}: {reason}"] += 1
        if code not in EXPECTED:
            tally.unexpected.append(f"{code.name}: {details[:200]} <- {str(value)[:300]!r}")
        assert code in EXPECTED, f"{tally.name}: {code.name} ({details}) for {value!r:.500}"

    def batch(index: int, size: int) -> None:
        # The first batch is derandomized as a one-batch (CI-sized) run always was; later
        # ones take their index as the seed: reproducible, and each a different sample.
        run = settings(
            max_examples=size,
            deadline=None,
            database=None,
            derandomize=index == 0,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )(given(strategy)(one))
        if index:
            run = seed(index)(run)
        run()

    started = time.monotonic()
    if memory is not None:
        tally.memory.append(memory())
    try:
        for index, first in enumerate(range(0, max_examples, BATCH)):
            before = tally.examples
            batch(index, min(BATCH, max_examples - first))
            if tally.examples - before < min(BATCH, max_examples - first):
                break  # the strategy ran out of new values
    finally:
        tally.seconds = time.monotonic() - started
        if memory is not None and len(tally.memory) == 2:
            tally.memory.append(memory())


def sequences(items: Iterable[st.SearchStrategy[Any]], max_size: int = 6) -> st.SearchStrategy[list[Any]]:
    """Lists mixing messages from several strategies."""
    return st.lists(st.one_of(*items), max_size=max_size)


def rss_bytes() -> int:
    """Resident memory of this process (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")
