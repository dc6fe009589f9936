"""Request streams that open with their config, the shape of every streaming RPC here.

A streaming request is a ``oneof request`` whose first message carries ``config`` and whose
later ones never do (audio, text, flushes, controls follow). ``first_config`` reads and checks
the opening message, ``after_config`` passes the rest through, refusing a second config; both
fail with FAILED_PRECONDITION (a wrong sequence, not a bad value) and a message saying which
message came where.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, TypeVar, overload

from google.protobuf.message import Message

from services.runtime.errors import FailedPrecondition

R = TypeVar("R", bound=Message)

ONEOF = "request"
CONFIG = "config"


@overload
async def first_config(requests: AsyncIterator[R], rpc: str, *, required: Literal[True] = True) -> R: ...


@overload
async def first_config(requests: AsyncIterator[R], rpc: str, *, required: bool) -> R | None: ...


async def first_config(requests: AsyncIterator[R], rpc: str, *, required: bool = True) -> R | None:
    """The stream's first message, which must carry ``config``. A stream that ends before
    sending anything is refused when ``required``, else None (the caller has nothing to do)."""
    first = await anext(requests, None)
    if first is None:
        if not required:
            return None
        came = "the stream ended with no message"
    else:
        kind = first.WhichOneof(ONEOF)
        if kind == CONFIG:
            return first
        came = f"`{kind}` came first" if kind else "an empty message came first"
    raise FailedPrecondition(
        f"the first message of {rpc} must carry `config`; {came}",
        fields={CONFIG: "missing in the first message"},
    )


async def after_config(requests: AsyncIterator[R], rpc: str) -> AsyncIterator[R]:
    """The messages after the config, in order; a second config is refused."""
    async for request in requests:
        if request.WhichOneof(ONEOF) == CONFIG:
            raise FailedPrecondition(
                f"`config` may only be sent once, in the first message of {rpc}", fields={CONFIG: "sent again"}
            )
        yield request
