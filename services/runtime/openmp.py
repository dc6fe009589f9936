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

import os
import sys

VARIABLE = "OMP_WAIT_POLICY"


def sleep_at_barriers(library: str) -> bool:
    """Makes the OpenMP threads of ``library`` (a module name) sleep at barriers instead of
    spinning, unless the operator chose a policy (``OMP_WAIT_POLICY`` set: theirs wins).
    libgomp reads the variable once, when it loads, so this must run before the first import
    of ``library``. Returns whether threads sleep: False when the operator chose otherwise,
    or when ``library`` was imported before without the policy (too late to change)."""
    if library not in sys.modules:
        os.environ.setdefault(VARIABLE, "PASSIVE")
    return os.environ.get(VARIABLE, "").upper() == "PASSIVE"
