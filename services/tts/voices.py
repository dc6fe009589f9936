"""Voice registry: which voices exist, and the fallback chain for each language.

A language's chain is its configured preference list (voices that are present), then any
other neural voice of that language (best quality first, one per model: Kokoro's styles share
a model and fail together), then espeak-ng for it. So ``fr_FR-siwis-medium`` leads the French
chain as soon as its files are in the model directory, Kokoro speaks French when siwis is
absent, and espeak-ng when neither is there.

Some engines also speak voices they do not list (Kokoro's blends, named by their recipe):
the registry asks them for a name it does not know.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from services.runtime.errors import NotFound
from services.tts.engines import ESPEAK_PREFIX, QUALITY_ORDER, Engine, VoiceSpec


@runtime_checkable
class ResolvesVoices(Protocol):
    """An engine that speaks voices named by a recipe it does not list (Kokoro's blends)."""

    def resolve(self, name: str) -> VoiceSpec | None:
        """The voice called ``name``; None when the name is not this engine's; ValueError
        saying what is wrong when it is, but malformed."""
        ...


@dataclass(frozen=True)
class Voice:
    """A voice and the engine that speaks it."""

    spec: VoiceSpec
    engine: Engine

    @property
    def name(self) -> str:
        return self.spec.name


class VoiceRegistry:
    """All voices of all engines, and per-language chains."""

    def __init__(
        self,
        engines: Sequence[Engine],
        chains: Mapping[str, Sequence[str]],
        default_language: str = "fr",
    ) -> None:
        self._voices: dict[str, Voice] = {}
        self._engines = list(engines)
        for engine in engines:
            for spec in engine.voices():
                self._voices.setdefault(spec.name, Voice(spec, engine))
        self._chains = {lang: list(names) for lang, names in chains.items()}
        self.default_language = default_language

    def names(self) -> list[str]:
        return list(self._voices)

    def get(self, name: str) -> Voice:
        """The voice called ``name``; NOT_FOUND listing the voices when there is none."""
        voice = self._voices.get(name) or self._resolve(name)
        if voice is None:
            neural = [v.name for v in self._voices.values() if v.spec.engine != "espeak-ng"]
            espeak = [v for v in self._voices.values() if v.spec.engine == "espeak-ng"]
            # the configured languages' espeak-ng voices first; the other hundred are only counted
            main = [v.name for v in espeak if v.spec.language in self._chains]
            more = len(espeak) - len(main)
            listing = ", ".join(neural + main) + (f" and {more} more espeak-ng voices" if more else "")
            raise NotFound(
                f"unknown voice '{name}'; available: {listing} (ListVoices gives them all)",
                fields={"config.voice": f"unknown voice '{name}'"},
            )
        return voice

    def _resolve(self, name: str) -> Voice | None:
        # Not kept in the registry: names are the client's, and listing stays what was configured.
        for engine in self._engines:
            if not isinstance(engine, ResolvesVoices):
                continue
            try:
                spec = engine.resolve(name)
            except ValueError as exc:
                raise NotFound(f"voice '{name}': {exc}", fields={"config.voice": str(exc)}) from exc
            if spec is not None:
                return self._voices.get(spec.name) or Voice(spec, engine)
        return None

    def chain(self, language: str) -> list[Voice]:
        """Voices for ``language`` in preference order (empty when none speaks it)."""
        ordered: list[Voice] = []
        for name in self._chains.get(language, []):
            try:
                voice = self._voices.get(name) or self._resolve(name)
            except NotFound:
                voice = None  # a malformed configured blend: skipped like an absent voice (the app warns)
            if voice is not None and voice not in ordered:
                ordered.append(voice)
        neural = sorted(
            (v for v in self._voices.values() if v.spec.language == language and v.spec.engine != "espeak-ng"),
            key=lambda v: (QUALITY_ORDER.get(v.spec.quality, 5), v.name),
        )
        for voice in neural:
            # one voice per breaker: when a model fails, its other voices fail too, and
            # trying each in turn would only delay the fallback
            if voice not in ordered and all(v.spec.breaker != voice.spec.breaker for v in ordered):
                ordered.append(voice)
        espeak = self._voices.get(ESPEAK_PREFIX + language)
        if espeak is not None and not any(v.spec.engine == "espeak-ng" for v in ordered):
            ordered.append(espeak)
        # any neural voice before any espeak-ng one, whatever the configured order says
        return sorted(ordered, key=lambda v: v.spec.engine == "espeak-ng")

    def chain_for(self, voice: str, language: str) -> list[Voice]:
        """The chain for a request: the named voice first, then its language's others;
        with no voice, the chain of ``language`` (or the default language)."""
        if voice:
            first = self.get(voice)
            rest = [v for v in self.chain(language or first.spec.language) if v != first]
            return [first, *rest]
        chain = self.chain(language or self.default_language)
        if not chain:
            raise NotFound(
                f"no voice speaks language '{language}'; languages available: {', '.join(self.languages())}",
                fields={"config.language": f"no voice for '{language}'"},
            )
        return chain

    def languages(self) -> list[str]:
        return sorted({v.spec.language for v in self._voices.values()})

    def listing(self, language: str = "") -> list[Voice]:
        """Every voice (or those of one language), in preference order within each language."""
        langs = [language] if language else self.languages()
        out: list[Voice] = []
        for lang in langs:
            chain = self.chain(lang)
            rest = sorted(
                (v for v in self._voices.values() if v.spec.language == lang and v not in chain),
                key=lambda v: v.name,
            )
            out += chain + rest
        return out
