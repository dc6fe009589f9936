"""``python -m client``: talk to the Parole orchestrator.

Modes: live (microphone and speaker, the default), ``--wav`` (spoken questions from files,
streamed at real-time pace; answers written to ``--out-dir``; no sound card needed) and
``--text`` (type instead of speaking). ``--validate`` asks you to rate each turn and saves the
session as a JSON report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pydantic import SecretStr

from client.conversation import Conversation
from client.converse import Response
from client.report import Rater, Rating, describe_turn, latency_table, save_report, session_report
from client.session import AudioSink, ConversationError, SessionOptions, Turn
from client.sinks import VirtualSink
from services.runtime.audio import Pcm, read_wav
from services.runtime.channel import ChannelSettings, open_channel

DEFAULT_TARGET = "127.0.0.1:50050"


@dataclass
class Outcome:
    """What a client session produced."""

    turns: list[Turn] = field(default_factory=list)
    ratings: dict[int, Rating] = field(default_factory=dict)
    session: dict[str, Any] = field(default_factory=dict)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    report_path: Path | None = None

    def report(self) -> dict[str, Any]:
        return session_report(
            self.turns,
            self.ratings,
            session=self.session,
            started_at=self.started_at,
            finished_at=self.finished_at or datetime.now(UTC),
        )


def _printer(out: TextIO) -> Callable[[Turn], None]:
    def show(turn: Turn) -> None:
        print(describe_turn(turn), file=out, flush=True)

    return show


def _live_events(out: TextIO) -> Callable[[Response], None]:
    """Live-mode status lines: the server gates the microphone; we only show it."""

    def show(r: Response) -> None:
        kind = r.WhichOneof("event")
        if kind == "speech" and r.speech.started:
            print("  (listening to you…)", file=out, flush=True)
        elif kind == "microphone":
            state = f"microphone muted ({r.microphone.reason})" if r.microphone.gated else "microphone open: speak"
            print(f"  ({state})", file=out, flush=True)
        elif kind == "transcript" and not r.transcript.is_final:
            print(f"  … {r.transcript.text}", file=out, flush=True)

    return show


async def _session_info(conv: Conversation, target: str, mode: str) -> dict[str, Any]:
    started = conv.session
    return {
        "target": target,
        "mode": mode,
        "session_id": started.session_id if started else "",
        "language": started.language if started else conv.options.language,
        "voice": started.voice if started else conv.options.voice,
        "barge_in": conv.options.barge_in,
    }


async def converse(
    *,
    target: ChannelSettings,
    options: SessionOptions,
    sink: AudioSink,
    wavs: Sequence[tuple[Pcm, str]] = (),
    texts: AsyncIterator[str] | None = None,
    microphone: Any = None,
    rater: Rater | None = None,
    out: TextIO = sys.stdout,
    turn_timeout: float = 120.0,
    outcome: Outcome | None = None,
) -> Outcome:
    """Runs one session in the mode given by which input is set: wavs, texts or microphone."""
    outcome = outcome or Outcome()
    mode = "wav" if wavs else "text" if texts is not None else "live"
    channel = open_channel(target)
    try:
        conv = Conversation(
            channel,
            options,
            sink,
            on_turn=_printer(out),
            on_event=_live_events(out) if mode == "live" else None,
        )
        async with conv:
            outcome.session = await _session_info(conv, target.target, mode)
            print(
                f"session {outcome.session['session_id']} · language {outcome.session['language'] or 'default'} · "
                f"voice {outcome.session['voice'] or 'default'}",
                file=out,
                flush=True,
            )
            try:
                if mode == "wav":
                    for pcm, label in wavs:
                        turn = await conv.speak(pcm, label=label, turn_timeout=turn_timeout)
                        if turn is None:
                            print(f"  no answer to {label} within {turn_timeout:.0f} s", file=out, flush=True)
                        elif rater is not None:
                            outcome.ratings[turn.index] = await rater.rate(turn)
                elif texts is not None:
                    async for line in texts:
                        if not line.strip():
                            continue
                        turn = await conv.ask(line.strip(), turn_timeout=turn_timeout)
                        if turn is None:
                            print(f"  no answer within {turn_timeout:.0f} s", file=out, flush=True)
                        elif rater is not None:
                            outcome.ratings[turn.index] = await rater.rate(turn)
                else:
                    await _live(conv, microphone, rater, outcome)
            finally:
                outcome.turns = list(conv.turns)
    finally:
        await channel.close()
        outcome.finished_at = datetime.now(UTC)
    return outcome


async def _live(conv: Conversation, microphone: Any, rater: Rater | None, outcome: Outcome) -> None:
    muted = asyncio.Event()
    pump = asyncio.create_task(conv.live(microphone, muted))
    try:
        while not pump.done():
            getter = asyncio.create_task(conv.next_turn(within=3600))
            await asyncio.wait({getter, pump}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                break
            turn = getter.result()
            if turn is not None and rater is not None:
                # Silence goes out while the user types, so their keystrokes are not a question.
                muted.set()
                try:
                    outcome.ratings[turn.index] = await rater.rate(turn)
                finally:
                    muted.clear()
        pump.result()
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump


async def stdin_lines(prompt: str = "you> ") -> AsyncIterator[str]:
    """Lines typed on stdin until end of input (Ctrl-D)."""
    while True:
        if sys.stdin.isatty():
            print(prompt, end="", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        yield line


def load_wav(path: Path) -> Pcm:
    """A question file as 16-bit mono PCM (resampled by the conversation if needed)."""
    try:
        return read_wav(path)
    except OSError as exc:
        raise SystemExit(f"cannot read {path}: {exc}") from exc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m client", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default=os.environ.get("PAROLE_TARGET", DEFAULT_TARGET), help="orchestrator host:port")
    mode = p.add_argument_group("mode (default: live microphone)")
    mode.add_argument("--wav", type=Path, action="append", default=[], help="a spoken question (repeatable)")
    mode.add_argument("--text", action="store_true", help="type your turns (one per line, Ctrl-D ends)")
    mode.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    mode.add_argument("--validate", action="store_true", help="rate each turn; save the session as JSON")
    session = p.add_argument_group("session")
    session.add_argument("--language", default="", help="fr or en (default: the server's, fr)")
    session.add_argument("--voice", default="", help="answer voice (default: the language's)")
    session.add_argument("--persona", default="", help="system prompt of the assistant")
    session.add_argument("--barge-in", action="store_true", help="speaking during an answer interrupts it")
    session.add_argument("--feedback-tail-ms", type=int, help="microphone stays muted this long after playback")
    session.add_argument("--end-of-speech-ms", type=int, default=0, help="silence that ends your turn")
    session.add_argument("--output-rate", type=int, default=0, help="answer sample rate (default: the voice's)")
    session.add_argument("--session-id", default="")
    session.add_argument("--turn-timeout", type=float, default=120.0, help="seconds to wait for an answer")
    audio = p.add_argument_group("audio")
    audio.add_argument("--input-device", type=int, help="microphone index (see --list-devices)")
    audio.add_argument("--output-device", type=int, help="speaker index (see --list-devices)")
    audio.add_argument("--out-dir", type=Path, help="write each answer to a WAV file here")
    audio.add_argument("--report", type=Path, help="validation report path (default: reports/validation/...)")
    sec = p.add_argument_group("security")
    sec.add_argument("--token", default=os.environ.get("PAROLE_TOKEN"), help="bearer token (env PAROLE_TOKEN)")
    sec.add_argument("--ca-file", type=Path, help="CA of the server certificate: enables TLS")
    sec.add_argument("--cert-file", type=Path, help="client certificate (mTLS)")
    sec.add_argument("--key-file", type=Path, help="client key (mTLS)")
    sec.add_argument("--server-name", help="name in the server certificate, if not the target's host")
    return p


def channel_settings(args: argparse.Namespace) -> ChannelSettings:
    return ChannelSettings(
        target=args.target,
        token=SecretStr(args.token) if args.token else None,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        server_name=args.server_name,
    )


def session_options(args: argparse.Namespace) -> SessionOptions:
    return SessionOptions(
        language=args.language,
        voice=args.voice,
        persona=args.persona,
        session_id=args.session_id,
        barge_in=args.barge_in,
        output_sample_rate_hz=args.output_rate,
        feedback_tail_ms=args.feedback_tail_ms,
        end_of_speech_silence_ms=args.end_of_speech_ms,
    )


def _print_devices() -> int:
    from client.devices import list_devices

    devices = list_devices()
    if not devices:
        print("no audio devices found (no sound card?)")
    for d in devices:
        kinds = ", ".join(k for k, n in (("in", d.inputs), ("out", d.outputs)) if n)
        print(f"{d.index:>3}  {d.name}  [{kinds}]  {d.default_rate} Hz  ({d.host_api})")
    return 0


def _speaker_or_virtual(args: argparse.Namespace, paced: bool) -> tuple[AudioSink, Callable[[], None]]:
    """The speaker when there is one (unless writing WAVs), else a virtual one."""
    if args.out_dir is None:
        from client.devices import AudioDeviceError, SpeakerSink, speaker_problem

        try:
            problem = speaker_problem(args.output_device)
        except AudioDeviceError as exc:
            problem = str(exc)
        if problem is None:
            speaker = SpeakerSink(args.output_device)
            return speaker, speaker.close
        print(f"(no speaker: {problem}; answers are not played)", file=sys.stderr)
    return VirtualSink(args.out_dir, paced=paced), lambda: None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from client.devices import AudioDeviceError

    try:
        if args.list_devices:
            return _print_devices()
        microphone = None
        if args.wav:
            wavs = [(load_wav(path), str(path)) for path in args.wav]
            # Simulated playback at real-time pace: the server's microphone gating sees the
            # same timing a listener would produce.
            sink: AudioSink = VirtualSink(args.out_dir, paced=True)
            close: Callable[[], None] = lambda: None  # noqa: E731
        elif args.text:
            wavs = []
            sink, close = _speaker_or_virtual(args, paced=False)
        else:
            from client.devices import MicrophoneSource, microphone_problem

            wavs = []
            problem = microphone_problem(args.input_device)
            if problem is not None:
                print(f"no microphone: {problem}. Use --wav FILE or --text.", file=sys.stderr)
                return 2
            microphone = MicrophoneSource(args.input_device)
            sink, close = _speaker_or_virtual(args, paced=True)
            print("live conversation: speak; Ctrl-C ends", flush=True)
    except AudioDeviceError as exc:
        print(f"client: {exc}", file=sys.stderr)
        return 2
    rater = Rater(out=sys.stdout) if args.validate else None
    outcome = Outcome()
    try:
        asyncio.run(
            converse(
                target=channel_settings(args),
                options=session_options(args),
                sink=sink,
                wavs=wavs,
                texts=stdin_lines() if args.text else None,
                microphone=microphone,
                rater=rater,
                turn_timeout=args.turn_timeout,
                outcome=outcome,
            )
        )
        code = 0
    except KeyboardInterrupt:
        code = 0
    except (ConversationError, AudioDeviceError) as exc:
        print(f"client: {exc}", file=sys.stderr)
        code = 1
    finally:
        close()
    if len(outcome.turns) > 1:
        print("\n" + latency_table(outcome.turns))
    if args.validate and outcome.turns:
        stamp = outcome.started_at.strftime("%Y%m%dT%H%M%SZ")
        path = args.report or Path("reports") / "validation" / f"session-{stamp}.json"
        print(f"validation report: {save_report(path, outcome.report())}")
    return code
