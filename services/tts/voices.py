"""Voice registry: which voices exist, and the fallback chain for each language.

A language's chain is its configured preference list (voices that are present), then any
other Piper voice of that language (best quality first), then espeak-ng for it. So
``fr_FR-siwis-medium`` leads the French chain as soon as its files are in the model
directory, and French is always spoken by espeak-ng when no Piper voice is there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.runtime.errors import NotFound
from services.tts.engines import ESPEAK_PREFIX, QUALITY_ORDER, Engine, VoiceSpec


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
        for engine in engines:
            for spec in engine.voices():
                self._voices.setdefault(spec.name, Voice(spec, engine))
        self._chains = {lang: list(names) for lang, names in chains.items()}
        self.default_language = default_language

    def names(self) -> list[str]:
        return list(self._voices)

    def get(self, name: str) -> Voice:
        """The voice called ``name``; NOT_FOUND listing the voices when there is none."""
        voice = self._voices.get(name)
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

    def chain(self, language: str) -> list[Voice]:
        """Voices for ``language`` in preference order (empty when none speaks it)."""
        ordered: list[Voice] = []
        for name in self._chains.get(language, []):
            voice = self._voices.get(name)
            if voice is not None and voice not in ordered:
                ordered.append(voice)
        piper = sorted(
            (v for v in self._voices.values() if v.spec.language == language and v.spec.engine != "espeak-ng"),
            key=lambda v: (QUALITY_ORDER.get(v.spec.quality, 5), v.name),
        )
        ordered += [v for v in piper if v not in ordered]
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
