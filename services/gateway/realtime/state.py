"""The Realtime session's state: its configuration as the client set it (``SessionState``,
checked and changed by ``session.update``, shown as the session object) and one response's
progress (``ResponseState``). Separate from the session so the configuration's rules are
plain functions over plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.gateway.errors import bad_request
from services.gateway.realtime.protocol import MAX_INSTRUCTIONS, RATE


@dataclass
class SessionState:
    """The Realtime session configuration, as the client set it."""

    model: str
    instructions: str = ""
    voice: str = ""
    language: str = ""
    """Transcription language the client set; empty: derived from the voice, else the default."""
    transcription: dict[str, Any] | None = None
    turn_detection: dict[str, Any] | None = field(
        default_factory=lambda: {"type": "server_vad", "interrupt_response": True, "create_response": True}
    )
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    max_output_tokens: int | str = "inf"

    @property
    def manual(self) -> bool:
        """Turn detection off: appended audio waits in the gateway until the client commits."""
        return self.turn_detection is None

    def silence_ms(self) -> int:
        if self.turn_detection is None:
            return 0
        return int(self.turn_detection.get("silence_duration_ms") or 0)

    def converse_key(self) -> tuple[Any, ...]:
        """What the Converse session depends on: a change restarts it."""
        barge_in = self.turn_detection is not None and bool(self.turn_detection.get("interrupt_response", True))
        return (
            self.instructions,
            self.voice,
            self.language,
            barge_in,
            self.silence_ms(),
            self.transcription is not None,
        )


@dataclass
class ResponseState:
    """One assistant response: a Converse turn."""

    id: str
    item_id: str
    turn_id: str
    text: list[str] = field(default_factory=list)
    audio_ms: float = 0.0
    parts_done: bool = False
    cancel_reason: str = ""
    done: bool = False


def session_object(s: SessionState, session_id: str) -> dict[str, Any]:
    """The session as ``session.created`` and ``session.updated`` show it."""
    pcm = {"type": "audio/pcm", "rate": RATE}
    turn = None
    if s.turn_detection is not None:
        turn = {
            "type": s.turn_detection.get("type", "server_vad"),
            "silence_duration_ms": s.silence_ms() or None,
            "interrupt_response": bool(s.turn_detection.get("interrupt_response", True)),
            "create_response": True,
        }
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": s.model,
        "output_modalities": s.output_modalities,
        "instructions": s.instructions,
        "audio": {
            "input": {
                "format": pcm,
                "transcription": s.transcription,
                "turn_detection": turn,
                "noise_reduction": None,
            },
            "output": {"format": pcm, "voice": s.voice or None, "speed": 1.0},
        },
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": s.max_output_tokens,
    }


def updated_session(s: SessionState, event: dict[str, Any]) -> SessionState:
    """The configuration a ``session.update`` asks for, checked whole: a refused update changes
    nothing. (The session checks the voice against the catalog.)"""
    update = event.get("session")
    if not isinstance(update, dict):
        raise bad_request("session.update needs a 'session' object", param="session")
    new = SessionState(**{k: getattr(s, k) for k in s.__dataclass_fields__})
    kind = update.get("type", "realtime")
    if kind != "realtime":
        raise bad_request("only 'realtime' sessions are served here", param="session.type")
    if "instructions" in update:
        value = update["instructions"]
        if not isinstance(value, str) or len(value) > MAX_INSTRUCTIONS:
            raise bad_request(
                f"instructions must be a string of at most {MAX_INSTRUCTIONS} characters",
                param="session.instructions",
            )
        new.instructions = value
    if "output_modalities" in update:
        mods = update["output_modalities"]
        if mods not in (["audio"], ["text"], ["audio", "text"], ["text", "audio"]):
            raise bad_request("output_modalities must be ['audio'] or ['text']", param="session.output_modalities")
        new.output_modalities = ["text"] if mods == ["text"] else ["audio"]
    if update.get("tools"):
        raise bad_request("tools are not supported by this server", param="session.tools", code="unsupported_parameter")
    if "max_output_tokens" in update:
        value = update["max_output_tokens"]
        if value != "inf" and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise bad_request(
                "max_output_tokens must be a positive integer or 'inf'", param="session.max_output_tokens"
            )
        new.max_output_tokens = value
    audio = update.get("audio", {})
    if not isinstance(audio, dict):
        raise bad_request("session.audio must be an object", param="session.audio")
    _audio_update(new, audio)
    return new


def _audio_update(new: SessionState, audio: dict[str, Any]) -> None:
    for side in ("input", "output"):
        part = audio.get(side, {})
        if not isinstance(part, dict):
            raise bad_request(f"session.audio.{side} must be an object", param=f"session.audio.{side}")
        fmt = part.get("format")
        if fmt is not None and (
            not isinstance(fmt, dict) or fmt.get("type") != "audio/pcm" or fmt.get("rate", RATE) != RATE
        ):
            raise bad_request(
                "only audio/pcm at 24000 Hz is supported",
                param=f"session.audio.{side}.format",
                code="unsupported_format",
            )
    inp, out = audio.get("input", {}), audio.get("output", {})
    if "transcription" in inp:
        t = inp["transcription"]
        if t is not None and not isinstance(t, dict):
            raise bad_request("transcription must be an object or null", param="session.audio.input.transcription")
        if t is not None:
            lang = t.get("language") or ""
            if not isinstance(lang, str) or (lang and not (len(lang) == 2 and lang.isalpha())):
                raise bad_request(
                    "transcription.language must be an ISO 639-1 code such as 'en'",
                    param="session.audio.input.transcription.language",
                )
            new.language = lang.lower()
        new.transcription = t
    if "turn_detection" in inp:
        td = inp["turn_detection"]
        if td is not None:
            if not isinstance(td, dict) or td.get("type") not in ("server_vad", "semantic_vad"):
                raise bad_request(
                    "turn_detection.type must be server_vad or semantic_vad (or turn_detection null)",
                    param="session.audio.input.turn_detection.type",
                )
            if td.get("create_response") is False:
                raise bad_request(
                    "create_response false is not supported: the fleet answers every turn it detects",
                    param="session.audio.input.turn_detection.create_response",
                    code="unsupported_parameter",
                )
            ms = td.get("silence_duration_ms")
            if ms is not None and (not isinstance(ms, int) or isinstance(ms, bool) or not 100 <= ms <= 5000):
                raise bad_request(
                    "silence_duration_ms must be an integer from 100 to 5000",
                    param="session.audio.input.turn_detection.silence_duration_ms",
                )
            interrupt = td.get("interrupt_response", True)
            if not isinstance(interrupt, bool):
                raise bad_request(
                    "interrupt_response must be true or false",
                    param="session.audio.input.turn_detection.interrupt_response",
                )
        new.turn_detection = td
    if "voice" in out:
        voice = out["voice"]
        if isinstance(voice, dict):
            voice = voice.get("id")
        if not isinstance(voice, str):
            raise bad_request("voice must be a string", param="session.audio.output.voice")
        new.voice = voice
    if out.get("speed", 1.0) != 1.0:
        raise bad_request(
            "speed is not supported in a conversation (use /v1/audio/speech for it)",
            param="session.audio.output.speed",
            code="unsupported_parameter",
        )
