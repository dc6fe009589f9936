"""The fleet the conversation benches run against, and what they read of its processes.

``fleet(changes)`` is the production fleet (``services.fleet``: four processes, CPU, offline
defaults) with the result caches off and a configuration's changes merged in; ``bench.e2e``
runs one per configuration of its ablation, ``bench.load`` and ``bench.soak`` the defaults.
``fleet_stats`` reads each service's memory and open file descriptors from /proc;
``fleet_counters`` reads chosen counters from each service's Prometheus endpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.fleet import Fleet

Changes = dict[str, dict[str, str]]
"""Environment changes by service name."""

CACHES_OFF: Changes = {
    "stt": {"STT_CACHE_MAX_BYTES": "0"},
    "llm": {"LLM_BACKENDS": '["llamacpp","canned"]'},
    "tts": {"TTS_CACHE_BYTES": "0"},
}
"""Result caches off: repeated questions must cost what new ones do, or the comparison
measures the caches. The LLM's prompt-prefix reuse stays: it is not a result cache."""


def merged(*parts: Changes) -> Changes:
    env: Changes = {}
    for part in parts:
        for service, values in part.items():
            env.setdefault(service, {}).update(values)
    return env


def fleet(changes: list[Changes]) -> Fleet:
    """The production fleet with result caches off and the configuration's changes."""
    names = ("stt", "llm", "tts", "orchestrator")
    return Fleet(env=merged(CACHES_OFF, *changes), ports=dict.fromkeys(names, 0), metrics_ports=dict.fromkeys(names, 0))


@dataclass(frozen=True)
class ProcStat:
    rss_mb: float
    """Resident memory, all of it (VmRSS)."""
    anon_mb: float
    """Resident private memory (RssAnon): heaps, arenas, model weights read into memory. What a
    leak grows; file-backed pages (libraries, memory-mapped files) the kernel may drop or keep."""
    fds: int
    cpu_s: float = 0.0
    """CPU time the process has used so far, user and system, all its threads."""


def proc_stat(pid: int) -> ProcStat:
    """Resident memory (VmRSS, RssAnon), open file descriptors and CPU time of a process, from /proc."""
    kb = {"VmRSS": 0, "RssAnon": 0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in kb:
            kb[key] = int(line.split()[1])
    # /proc/PID/stat: the command name may hold spaces, so count the fields after its ")";
    # utime and stime are the 14th and 15th fields, in clock ticks.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return ProcStat(
        rss_mb=kb["VmRSS"] / 1024, anon_mb=kb["RssAnon"] / 1024, fds=len(os.listdir(f"/proc/{pid}/fd")), cpu_s=cpu_s
    )


def fleet_stats(fleet: Fleet) -> dict[str, ProcStat]:
    """``proc_stat`` of every service of the fleet, by name."""
    return {name: proc_stat(child.process.pid) for name, child in fleet.children.items()}


def fleet_descriptors(fleet: Fleet) -> dict[str, dict[int, str]]:
    """Every service's open descriptors, by number, with what each is (a file's path,
    ``socket:[inode]``, ``anon_inode:[eventfd]``...): to tell which ones a level left open."""
    out: dict[str, dict[int, str]] = {}
    for name, child in fleet.children.items():
        fds: dict[int, str] = {}
        folder = Path(f"/proc/{child.process.pid}/fd")
        for entry in os.listdir(folder):
            try:
                fds[int(entry)] = os.readlink(folder / entry)
            except OSError:  # closed while listed
                continue
        out[name] = fds
    return out


def fleet_counters(fleet: Fleet, wanted: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Counters and histogram totals of the fleet's services, by service name and the families
    to read (counters without ``_total``): ``{"llm parole_llm_tokens_total{kind=completion}":
    123.0, "stt parole_stt_decode_seconds_sum{engine=base,kind=final}": 4.2, ...}``, one key
    per labelled series (a histogram gives its ``_count`` and ``_sum``). A service without a metrics port, or one not answering, reads
    as nothing (the bench goes on; its report then lacks those keys)."""
    out: dict[str, float] = {}
    for spec in fleet.specs:
        families = wanted.get(spec.name)
        if not families or not spec.metrics_port:
            continue
        try:
            text = httpx.get(f"http://127.0.0.1:{spec.metrics_port}/metrics", timeout=10).text
        except httpx.HTTPError:
            continue
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                continue
            for sample in family.samples:
                if sample.name.endswith(("_total", "_count", "_sum")):
                    labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                    out[f"{spec.name} {sample.name}{{{labels}}}"] = sample.value
    return out


def counter_deltas(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """What each counter grew by between two ``fleet_counters`` reads (a series first seen in
    ``after`` grew from 0)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}
