"""Kokoro-82M: a neural voice that speaks French from espeak-ng's phonemes (onnxruntime).

The only module that runs the Kokoro network. Its model (int8 ONNX), phoneme vocabulary and
style vectors are assembled by ``python -m services.models assemble kokoro``; the styles
shipped are Japanese speakers, and fed French IPA they speak French (round-trip WER measured
by ``bench.tts``). Every call blocks; the synthesizer runs it in its worker threads.

A voice is a style: one of the named ones (``kokoro:jf_nezumi``) or a weighted blend of them
(``kokoro:jf_nezumi*0.6+jm_kumo*0.4``; weights are normalised to sum to 1). All voices share
one onnxruntime session: a blend costs 256 floats per row of the style table, not a model.
Text becomes phoneme tokens in ``services.tts.kokoro_text``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from services.models.store import ModelError, ModelStore
from services.runtime.audio import float_to_pcm16
from services.runtime.device import Placement
from services.runtime.logging import get_logger
from services.tts.engines import (
    ArenaBound,
    Audio,
    EngineError,
    SynthOptions,
    VoiceSpec,
    onnx_providers,
    session_options,
)
from services.tts.kokoro_text import Phonemizer, token_runs

log = get_logger(__name__)

KOKORO_PREFIX = "kokoro:"
SAMPLE_RATE = 24000
BREAKER = "kokoro"
"""One breaker for every Kokoro voice: they share one model, so they fail together."""
MAX_BLEND_PARTS = 8
SILENCE = 0.004
"""Sample level under which Kokoro's output is silence (its floor is ~3e-4, speech onsets pass
0.01 within 10 ms)."""
PEAK_LIMIT = 0.97
"""A piece louder than this after the gain is scaled down to it."""
LEAD_SECONDS = 0.03
TAIL_SECONDS = {".": 0.25, "!": 0.25, "?": 0.25, "…": 0.3, ",": 0.12, ";": 0.15, ":": 0.15, "": 0.08}
"""Silence kept after the voice, by the mark the piece ends with."""
_STYLE_NAME = re.compile(r"^[a-z]{2}_[a-z0-9]+$")
_BLEND_PART = re.compile(r"^([a-z]{2}_[a-z0-9]+)(?:\*(\d+(?:\.\d+)?|\.\d+))?$")

# ----------------------------------------------------------------------------- styles
FloatArray = npt.NDArray[np.float32]


def parse_blend(expression: str) -> list[tuple[str, float]]:
    """``"jf_nezumi*0.6+jm_kumo*0.4"`` → [(style, weight)], weights summing to 1 (ValueError
    saying what is wrong otherwise). A plain style name is a blend of one."""
    parts: dict[str, float] = {}
    for raw in expression.split("+"):
        m = _BLEND_PART.match(raw.strip())
        if m is None:
            raise ValueError(
                f"'{raw.strip()}' is not a style or 'style*weight' (e.g. kokoro:jf_nezumi*0.6+jm_kumo*0.4)"
            )
        weight = float(m.group(2)) if m.group(2) else 1.0
        if not 0 < weight <= 100:
            raise ValueError(f"weight {weight:g} of {m.group(1)} must be above 0 and at most 100")
        parts[m.group(1)] = parts.get(m.group(1), 0.0) + weight
    if len(parts) > MAX_BLEND_PARTS:
        raise ValueError(f"a blend mixes at most {MAX_BLEND_PARTS} styles")
    total = sum(parts.values())
    return [(name, weight / total) for name, weight in parts.items()]


def blend_name(parts: Sequence[tuple[str, float]]) -> str:
    """The canonical voice name of a blend (one style: its plain name)."""
    if len(parts) == 1:
        return KOKORO_PREFIX + parts[0][0]
    return KOKORO_PREFIX + "+".join(f"{name}*{weight:.3g}" for name, weight in parts)


def kokoro_size(feed: Mapping[str, Any]) -> float:
    """Tokens over speed: what Kokoro's audio grows with."""
    return float(feed["tokens"].shape[1] / max(float(feed["speed"][0]), 1e-3))


@dataclass(frozen=True)
class _Model:
    session: ArenaBound
    vocab: dict[str, int]
    styles: dict[str, FloatArray]
    """Style tables, [510, 256] float32 each, row = number of tokens."""


# ----------------------------------------------------------------------------- engine
_WARM_TEXT = "Bonjour, voici la réponse à votre question, avec quelques détails utiles pour la suite de la journée"


class KokoroEngine:
    """Kokoro voices: every named style of the model plus the configured blends, speaking the
    language of the espeak-ng voice that phonemizes for it (French by default)."""

    name = "kokoro"

    def __init__(
        self,
        store: ModelStore,
        placement: Placement,
        *,
        threads: int = 0,
        blends: Sequence[str] = (),
        espeak_voice: str = "fr-fr",
        gain: float = 0.75,
        pace: float = 1.0,
        warm_chars: int = 200,
        espeak_timeout_seconds: float = 10.0,
    ) -> None:
        self._store = store
        self._placement = placement
        self._threads = threads
        self._gain = gain
        self._pace = pace
        self._warm_chars = warm_chars
        self._language = espeak_voice.split("-")[0]
        region = espeak_voice.split("-")[1].upper() if "-" in espeak_voice else ""
        self._locale = f"{self._language}_{region}" if region else self._language
        self._model: _Model | None = None
        self._lock = threading.Lock()
        self._warmed = False
        self._phonemize: Phonemizer | None = None
        self._specs: dict[str, VoiceSpec] = {}
        self._mixes: dict[str, list[tuple[str, float]]] = {}
        self.missing: ModelError | None = None
        """Why there are no Kokoro voices (the file and the fix), or None."""
        try:
            files = store.kokoro()
        except ModelError as exc:
            self.missing = exc
            return
        self._files = files
        self._vocab: dict[str, int] = json.loads(files.vocab.read_text(encoding="utf-8"))["vocab"]
        self._phonemize = Phonemizer(self._vocab, espeak_voice, timeout=espeak_timeout_seconds)
        if not self._phonemize.available:
            self.missing = ModelError(
                "kokoro", None, "espeak-ng is not installed (it gives Kokoro its phonemes)", "apt-get install espeak-ng"
            )
            return
        with np.load(files.voices) as npz:
            self._style_names = sorted(n for n in npz.files if _STYLE_NAME.match(n))
        for style in self._style_names:
            self._add([(style, 1.0)])
        for expression in blends:
            self._add(self._recipe(KOKORO_PREFIX + expression.removeprefix(KOKORO_PREFIX)))

    # ------------------------------------------------------------------ voices
    def _spec(self, name: str) -> VoiceSpec:
        return VoiceSpec(name, self._language, self._locale, SAMPLE_RATE, "kokoro", "medium", 1, BREAKER)

    def _add(self, parts: list[tuple[str, float]]) -> VoiceSpec:
        spec = self._spec(blend_name(parts))
        self._mixes[spec.name] = parts
        self._specs[spec.name] = spec
        return spec

    def voices(self) -> list[VoiceSpec]:
        return list(self._specs.values())

    @property
    def styles(self) -> list[str]:
        return list(getattr(self, "_style_names", []))

    def resolve(self, name: str) -> VoiceSpec | None:
        """The voice for a blend written in its name (None: not a Kokoro name); ValueError
        saying what is wrong with a malformed one. Not remembered: clients name blends at will,
        and a recipe is parsed again per piece faster than a clause is phonemized."""
        if not name.startswith(KOKORO_PREFIX) or self.missing is not None:
            return None
        return self._spec(blend_name(self._recipe(name)))

    def _recipe(self, name: str) -> list[tuple[str, float]]:
        listed = self._mixes.get(name)
        if listed is not None:
            return listed
        parts = parse_blend(name.removeprefix(KOKORO_PREFIX))
        unknown = [style for style, _ in parts if style not in self._style_names]
        if unknown:
            raise ValueError(f"Kokoro has no style {', '.join(unknown)}; its styles: {', '.join(self._style_names)}")
        return parts

    # ------------------------------------------------------------------ loading
    def load(self, voice: str) -> None:
        model = self._get_model()
        with self._lock:
            if self._warmed:
                return
            self._warmed = True
        # The first run allocates onnxruntime's buffers and its CPU arena keeps the largest
        # size ever needed: warming with the longest clause the splitter lets through keeps
        # memory flat while serving (the same reasoning as Piper's warm-up in engines.py).
        text = " ".join([_WARM_TEXT] * (1 + self._warm_chars // len(_WARM_TEXT)))
        with model.session.warming():
            self.synthesize(voice, text[: max(1, self._warm_chars - 1)].rstrip() + ".", SynthOptions())
        log.info("loaded Kokoro", voices=len(self._specs), providers=model.session.get_providers())

    def _get_model(self) -> _Model:
        with self._lock:  # two first requests must not load the model twice
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self) -> _Model:
        if self.missing is not None:
            raise EngineError(str(self.missing))
        import onnxruntime

        options = session_options(self._threads)
        providers = onnx_providers(self._placement, "Kokoro")
        session = ArenaBound(
            onnxruntime.InferenceSession(str(self._files.onnx), sess_options=options, providers=providers), kokoro_size
        )
        with np.load(self._files.voices) as npz:
            styles = {n: np.asarray(npz[n], dtype=np.float32).reshape(-1, 256) for n in self._style_names}
        return _Model(session, self._vocab, styles)

    # ------------------------------------------------------------------ speaking
    def phonemes(self, text: str) -> str:
        """The phoneme string Kokoro reads for ``text``."""
        if self._phonemize is None:
            raise EngineError(str(self.missing))
        return self._phonemize(text)

    def synthesize(self, voice: str, text: str, options: SynthOptions) -> Audio:
        model = self._get_model()
        try:
            parts = self._recipe(voice)
        except ValueError as exc:
            raise EngineError(f"{voice}: {exc}") from exc
        phonemes = self.phonemes(text)
        ids = [model.vocab[c] for c in phonemes]
        if not ids:
            return Audio(b"", SAMPLE_RATE)
        pieces = []
        try:
            for run in token_runs(ids, model.vocab):
                style = sum(weight * model.styles[name][len(run)] for name, weight in parts)
                out = model.session.run(
                    None,
                    {
                        "tokens": np.array([[0, *run, 0]], dtype=np.int64),
                        "style": np.asarray(style, dtype=np.float32).reshape(1, 256),
                        "speed": np.array([options.speed * self._pace], dtype=np.float32),
                    },
                )[0]
                pieces.append(np.asarray(out, dtype=np.float32).ravel())
        except Exception as exc:
            raise EngineError(f"Kokoro voice {voice} failed: {exc}") from exc
        audio = _trim(np.concatenate(pieces), phonemes[-1]) * self._gain
        peak = float(np.abs(audio).max()) if audio.size else 0.0
        if peak > PEAK_LIMIT:
            # rare after the fixed gain: scaled down rather than clipped (clipping crackles)
            audio *= PEAK_LIMIT / peak
        return Audio(float_to_pcm16(audio), SAMPLE_RATE)


def _trim(audio: FloatArray, last: str) -> FloatArray:
    """Kokoro pads every run with ~0.4 s of silence before the voice and ~0.6 s after it
    (measured): cut to a short lead-in, so the first audio of a stream is heard at once, and to
    a tail that fits the mark the piece ends with, so streamed pieces join with natural pauses."""
    loud = np.flatnonzero(np.abs(audio) > SILENCE)
    if loud.size == 0:
        return audio
    tail = TAIL_SECONDS.get(last, TAIL_SECONDS[""])
    start = max(0, int(loud[0]) - int(LEAD_SECONDS * SAMPLE_RATE))
    end = min(audio.size, int(loud[-1]) + 1 + int(tail * SAMPLE_RATE))
    return audio[start:end]
