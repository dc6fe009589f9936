"""``make run``: start the fleet locally, then talk to it.

Starts stt, llm and tts (in parallel), then the orchestrator and the gateway (the OpenAI and
Wyoming APIs), exactly as their containers run them (``services.fleet``), and waits until every
one is SERVING. With a microphone it holds a
live conversation; without one (or with ``--demo``) it asks the bundled spoken questions
(``client/demo``) at real-time pace and prints the latency table. Everything it started is
stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from client.cli import Outcome, converse
from client.demo import Question, questions
from client.report import latency_table, save_report, turn_record
from client.session import ConversationError, SessionOptions, Turn
from client.sinks import VirtualSink
from services.fleet import DEFAULT, REPO, Fleet, FleetError, announce
from services.runtime.audio import read_wav
from services.runtime.channel import ChannelSettings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m client.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", action="store_true", help="the demo on bundled questions even with a microphone")
    p.add_argument("--language", default="", help="live mode: fr or en (default: the server's)")
    p.add_argument("--barge-in", action="store_true", help="live mode: speaking interrupts the answer")
    p.add_argument("--input-device", type=int, help="microphone index (python -m client --list-devices)")
    p.add_argument("--output-device", type=int, help="speaker index")
    p.add_argument("--out-dir", type=Path, default=REPO / "reports" / "demo", help="demo answers and report")
    p.add_argument("--log-dir", type=Path, default=REPO / "reports" / "fleet", help="one log per service")
    p.add_argument("--ready-timeout", type=float, default=900.0, help="seconds to wait for SERVING (model loads)")
    p.add_argument("--turn-timeout", type=float, default=180.0, help="seconds to wait for each answer")
    return p


def _microphone(device: int | None) -> str | None:
    """None when a microphone can be used; else why not."""
    from client.devices import AudioDeviceError, microphone_problem

    try:
        return microphone_problem(device)
    except AudioDeviceError as exc:
        return str(exc)


async def demo(target: str, items: Sequence[Question], out_dir: Path, turn_timeout: float) -> list[Turn]:
    """Asks the bundled questions, one session per language, and returns every turn in order."""
    turns: list[Turn] = []
    by_language: dict[str, list[Question]] = {}
    for q in items:
        by_language.setdefault(q.language, []).append(q)
    for language, group in by_language.items():
        outcome = await converse(
            target=ChannelSettings(target=target),
            options=SessionOptions(language=language),
            sink=VirtualSink(out_dir / language, paced=True),
            wavs=[(read_wav(q.path), q.path.name) for q in group],
            turn_timeout=turn_timeout,
        )
        for turn in outcome.turns:
            turns.append(dataclasses.replace(turn, index=len(turns) + 1))
    return turns


async def live(target: str, args: argparse.Namespace) -> Outcome:
    from client.devices import MicrophoneSource, SpeakerSink, speaker_problem

    problem = speaker_problem(args.output_device)
    if problem is None:
        sink: Any = SpeakerSink(args.output_device)
    else:
        print(f"(no speaker: {problem}; answers are written to {args.out_dir / 'live'})")
        sink = VirtualSink(args.out_dir / "live", paced=True)
    print("live conversation: speak after the 'microphone open' line; Ctrl-C ends", flush=True)
    try:
        return await converse(
            target=ChannelSettings(target=target),
            options=SessionOptions(language=args.language, barge_in=args.barge_in),
            sink=sink,
            microphone=MicrophoneSource(args.input_device),
            turn_timeout=args.turn_timeout,
        )
    finally:
        if isinstance(sink, SpeakerSink):
            sink.close()


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # SIGTERM (a supervisor, a closed terminal) takes Ctrl-C's path: the fleet is stopped.
    signal.signal(signal.SIGTERM, _terminate)
    mic_problem = None if args.demo else _microphone(args.input_device)
    print(f"starting the fleet: {', '.join(DEFAULT)} (logs in {args.log_dir}/) ...", flush=True)
    started = datetime.now(UTC)
    try:
        with Fleet(DEFAULT, log_dir=args.log_dir, ready_timeout=args.ready_timeout, on_ready=announce) as fleet:
            target = fleet.target("orchestrator")
            print(
                f"OpenAI-compatible API: http://127.0.0.1:{fleet.extra_port('gateway', 'HTTP__PORT')}/v1; "
                f"Wyoming (Home Assistant): STT tcp://127.0.0.1:{fleet.extra_port('gateway', 'WYOMING__ASR_PORT')}, "
                f"TTS tcp://127.0.0.1:{fleet.extra_port('gateway', 'WYOMING__TTS_PORT')}",
                flush=True,
            )
            print(
                f"web client: {fleet.web_client_url()} (a browser tab: echo cancellation, so barge-in works "
                "on open speakers; README: 'Talk to it from a browser')",
                flush=True,
            )
            if not args.demo and mic_problem is None:
                asyncio.run(live(target, args))
                return 0
            if not args.demo:
                print(f"no microphone ({mic_problem}): running the demo on the bundled questions", flush=True)
            items = questions()
            turns = asyncio.run(demo(target, items, args.out_dir, args.turn_timeout))
            serving = {
                n: {"target": c.target, "serving_after_seconds": c.serving_after} for n, c in fleet.children.items()
            }
    except FleetError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    except ConversationError as exc:
        print(f"make run: {exc} (service logs in {args.log_dir}/)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopped", flush=True)
        return 130
    print("\n" + latency_table(turns), flush=True)
    report = {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "fleet": serving,
        "questions": [{"file": q.path.name, "language": q.language, "text": q.text} for q in items],
        "turns": [turn_record(t) for t in turns],
    }
    path = save_report(args.out_dir / "demo.json", report)
    print(f"\nanswers and report in {path.parent}/", flush=True)
    answered = [t for t in turns if t.reply and not t.failed]
    return 0 if len(answered) == len(items) else 1


if __name__ == "__main__":
    sys.exit(main())
