"""``python -m bench``: every benchmark, one after the other; JSON reports under reports/."""

from __future__ import annotations

import runpy
import sys

BENCHMARKS = ("bench.stt", "bench.llm", "bench.tts", "bench.e2e", "bench.gateway", "bench.load", "bench.soak")

if __name__ == "__main__":
    only = sys.argv[1:] or [b.split(".")[1] for b in BENCHMARKS]
    for name in only:
        module = f"bench.{name}"
        if module not in BENCHMARKS:
            sys.exit(f"unknown benchmark {name}; choose from {', '.join(b.split('.')[1] for b in BENCHMARKS)}")
        print(f"== {module}", flush=True)
        sys.argv = [module]
        runpy.run_module(module, run_name="__main__")
