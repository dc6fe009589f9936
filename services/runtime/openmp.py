"""OpenMP's wait policy for the model libraries built on GNU OpenMP (llama.cpp).

libgomp's threads spin at every barrier before they sleep. llama.cpp meets a barrier after
every operator of the graph (hundreds per token), so on a machine whose cores the fleet's
services share, a thread whose partner was preempted spins away the core that the speech
services (or the other answer) are waiting for, and the answer itself slows down. Measured
on 2 cores (AVX2, ``python -m bench.spinning``, its llama.cpp rows), 40 tokens of the 1.5B
model beside two busy processes: 76 s spinning, 5.2 s sleeping; alone 3.28 s against 3.34 s.
CTranslate2 (the STT) ships its own libgomp and was not slowed by spinning (a 6 s decode
beside one busy process: 1.92 s spinning, 1.88 s sleeping), so it keeps the default.
"""

from __future__ import annotations

import importlib
import os
import sys

VARIABLE = "OMP_WAIT_POLICY"

_sleeping: set[str] = set()
"""Libraries this module loaded with sleeping threads."""


def load_with_sleeping_threads(library: str) -> bool:
    """Imports ``library`` (a module name) with its OpenMP threads set to sleep at barriers
    instead of spinning, unless the operator chose a policy (``OMP_WAIT_POLICY`` set: theirs
    wins). libgomp reads the variable once, when it loads, so it is in the environment only
    while the library loads: processes started later, and OpenMP libraries loaded later
    (CTranslate2 ships its own libgomp), keep their default. Returns whether the library's
    threads sleep: False when the operator chose otherwise, or when ``library`` was imported
    before without this (too late to change)."""
    if library in sys.modules:
        return library in _sleeping or os.environ.get(VARIABLE, "").upper() == "PASSIVE"
    chosen = os.environ.get(VARIABLE)
    if chosen is not None:
        importlib.import_module(library)
        return chosen.upper() == "PASSIVE"
    os.environ[VARIABLE] = "PASSIVE"
    try:
        importlib.import_module(library)
    finally:
        del os.environ[VARIABLE]
    _sleeping.add(library)
    return True
