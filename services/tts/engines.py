"""Speech engines: Piper (neural, onnxruntime) and espeak-ng (formant, any language).

The only module that imports piper or speaks with espeak-ng (Kokoro, in kokoro.py, runs it
for phonemes only). Every call here blocks; the synthesizer runs them in its worker threads.

espeak-ng runs as a subprocess per call rather than through a binding: libespeak-ng keeps one
global voice and state (not thread-safe), so a binding would serialise every call behind a
lock, and a crash or hang inside it would take the server down. A process costs ~15 ms to
start (measured), is killed by a timeout if it hangs, and failures surface as errors the
breaker counts. Text goes through stdin so text starting with "-" is never read as an option.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from services.models.store import ModelStore
from services.runtime.audio import float_to_pcm16, read_wav_bytes
from services.runtime.device import DeviceError, Placement
from services.runtime.logging import get_logger
from services.runtime.onnx import sleep_between_operators

log = get_logger(__name__)

QUALITY_ORDER = {"high": 0, "medium": 1, "low": 2, "x_low": 3, "robotic": 9}


@dataclass(frozen=True)
class VoiceSpec:
    """A voice an engine can speak with."""

    name: str
    language: str
    """ISO 639-1 language, e.g. "fr"."""
    locale: str
    sample_rate: int
    engine: str
    quality: str
    num_speakers: int = 1
    breaker: str = ""
    """Circuit-breaker key: a Piper model fails on its own, all espeak-ng voices share a binary."""


@dataclass(frozen=True)
class SynthOptions:
    """How to speak a piece of text."""

    speed: float = 1.0
    speaker_id: int | None = None


@dataclass(frozen=True)
class Audio:
    """Mono PCM16 audio."""

    pcm: bytes
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate


class EngineError(RuntimeError):
    """An engine failed to speak (counted by its breaker; the next voice is tried)."""


class Engine(Protocol):
    """A speech engine: lists its voices, loads them, speaks (blocking calls)."""

    name: str

    def voices(self) -> list[VoiceSpec]:
        """The voices this engine offers now."""
        ...

    def load(self, voice: str) -> None:
        """Loads (and warms) a voice so the first request does not pay for it."""
        ...

    def synthesize(self, voice: str, text: str, options: SynthOptions) -> Audio:
        """Speaks ``text`` with ``voice``; raises EngineError on failure."""
        ...


def session_options(threads: int) -> Any:
    """onnxruntime options for a voice network, whose input length changes with every clause.
    A memory pattern is planned per input shape and each new plan takes fresh arena blocks, so
    with it on the arena keeps growing with the variety of lengths; off, runs reuse the same
    blocks, and just as fast (Piper: 80 random clauses in 21.3-21.4 s off, 21.1-21.5 s on).
    ``threads`` 0 leaves onnxruntime's default (every core). The intra-op threads sleep
    between operators (``sleep_between_operators``)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.enable_mem_pattern = False
    sleep_between_operators(options)
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


ARENA_MARGIN = 1.25
"""How far past the warm-up's size a run may go and keep what the arena grew to: a piece of
the same length with more phonemes, or slightly slower, grows it by little."""


class ArenaBound:
    """An onnxruntime session whose arena keeps no more than its warm-up needed.

    The CPU arena keeps the largest buffers any run has needed. The engines warm it with the
    longest piece the splitter lets through at normal speed, so ordinary runs find their
    buffers there (within ``ARENA_MARGIN``); but a slow speed stretches the audio (0.25 makes it four times longer), and
    one such run left Piper 200 MB larger for good (10,000 fuzzed requests grew the TTS by
    230 MB this way). A run whose ``size`` (output length, in the engine's own units) is past
    what the warm-up saw gives the arena's free memory back when it ends (onnxruntime's
    ``memory.enable_memory_arena_shrinkage``): that run is ~10 % slower, the others are not
    touched. CPU arena only; a GPU's stays as it is."""

    def __init__(self, session: Any, size: Callable[[Mapping[str, Any]], float]) -> None:
        import onnxruntime

        self._session = session
        self._size = size
        self._warming = False
        self.warm_size = 0.0
        """The largest size the warm-up ran."""
        self.shrunk = 0
        """Runs that gave memory back."""
        self._shrink = onnxruntime.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    @contextlib.contextmanager
    def warming(self) -> Iterator[None]:
        """Runs inside set the size the arena is meant for."""
        self._warming = True
        try:
            yield
        finally:
            self._warming = False

    def run(self, output_names: Any, input_feed: Mapping[str, Any], run_options: Any = None) -> Any:
        size = self._size(input_feed)
        if self._warming:
            self.warm_size = max(self.warm_size, size)
        elif size > self.warm_size * ARENA_MARGIN and run_options is None:
            run_options = self._shrink
            self.shrunk += 1
        return self._session.run(output_names, input_feed, run_options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def piper_size(feed: Mapping[str, Any]) -> float:
    """Phonemes times the length scale (``scales[1]``): what a VITS voice's audio grows with."""
    return float(feed["input"].shape[1] * feed["scales"][1])


def onnx_providers(placement: Placement, what: str) -> list[Any]:
    """onnxruntime providers for a placement: CUDA first (CPU for the nodes it lacks), or CPU."""
    import onnxruntime

    if placement.device != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise DeviceError(
            f"{what} was placed on CUDA but this onnxruntime has no CUDA provider; "
            "install onnxruntime-gpu or set TTS_DEVICE__DEVICE=cpu"
        )
    cuda = {"device_id": placement.device_index, "cudnn_conv_algo_search": "HEURISTIC"}
    return [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]


# ----------------------------------------------------------------------------- Piper
# Warm-up text: plain words every voice's phonemizer reads, repeated to the longest clause.
_WARM_TEXT = "the seven bright stars shine above quiet hills while rivers run to a distant sea"


class PiperEngine:
    """Piper voices found in the model directory (``<model_dir>/piper/<name>.onnx`` + ``.json``)."""

    name = "piper"

    def __init__(
        self, store: ModelStore, placement: Placement, threads: int = 0, gain: float = 1.0, warm_chars: int = 200
    ) -> None:
        self._store = store
        self._warm_chars = warm_chars
        self._placement = placement
        self._threads = threads
        self._gain = gain
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._specs: dict[str, VoiceSpec] = {}
        for name in store.piper_voices():
            try:
                _, config = store.piper_voice(name)
                self._specs[name] = _piper_spec(name, json.loads(config.read_text(encoding="utf-8")))
            except Exception as exc:  # noqa: BLE001 - a broken voice must not hide the others
                log.warning("skipping unreadable Piper voice", voice=name, error=str(exc))

    def voices(self) -> list[VoiceSpec]:
        return list(self._specs.values())

    def load(self, voice: str) -> None:
        self._voice(voice)
        # The first run allocates onnxruntime's buffers, and its CPU arena keeps the largest
        # size it has ever needed. Warming with the longest clause the splitter lets through
        # (``warm_chars``) reaches that size now: memory stays flat while serving instead of
        # stepping up each time a longer clause comes. Measured over 80 random clauses after
        # load: +8 MB with this warm-up (and the memory pattern off), +51 MB with the pattern
        # on, +267 MB with neither; bench.soak checks it across the fleet.
        text = " ".join([_WARM_TEXT] * (1 + self._warm_chars // len(_WARM_TEXT)))
        with self._voice(voice).session.warming():
            self.synthesize(voice, text[: max(1, self._warm_chars - 1)].rstrip() + ".", SynthOptions())

    def _voice(self, name: str) -> Any:
        with self._lock:  # two first requests must not load the same model twice
            if name not in self._loaded:
                self._loaded[name] = self._load(name)
            return self._loaded[name]

    def _load(self, name: str) -> Any:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        onnx, config = self._store.piper_voice(name)
        options = session_options(self._threads)
        providers = onnx_providers(self._placement, "Piper")
        session = ArenaBound(
            onnxruntime.InferenceSession(str(onnx), sess_options=options, providers=providers), piper_size
        )
        parsed = PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
        log.info("loaded Piper voice", voice=name, providers=session.get_providers())
        return PiperVoice(session=session, config=parsed)

    def synthesize(self, voice: str, text: str, options: SynthOptions) -> Audio:
        from piper import SynthesisConfig

        model = self._voice(voice)
        config = SynthesisConfig(
            speaker_id=options.speaker_id,
            length_scale=model.config.length_scale / options.speed,
            # Per-chunk peak normalisation makes consecutive clauses jump in level; a fixed
            # gain keeps the voice's own dynamics across a streamed answer.
            normalize_audio=False,
            volume=self._gain,
        )
        try:
            parts = [chunk.audio_float_array for chunk in model.synthesize(text, config)]
        except Exception as exc:
            raise EngineError(f"Piper voice {voice} failed: {exc}") from exc
        audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        return Audio(float_to_pcm16(audio), int(model.config.sample_rate))


def _piper_spec(name: str, config: dict[str, Any]) -> VoiceSpec:
    lang = config.get("language", {})
    code = str(lang.get("code") or name.split("-")[0])
    family = str(lang.get("family") or code.split("_")[0]).lower()
    quality = str(config.get("audio", {}).get("quality") or name.rsplit("-", 1)[-1])
    return VoiceSpec(
        name=name,
        language=family,
        locale=code,
        sample_rate=int(config["audio"]["sample_rate"]),
        engine="piper",
        quality=quality,
        num_speakers=int(config.get("num_speakers", 1)),
        breaker=f"piper:{name}",
    )


# ----------------------------------------------------------------------------- espeak-ng
ESPEAK_PREFIX = "espeak-ng:"
ESPEAK_WPM = 140
"""Words per minute at speed 1.0 (espeak-ng's own default is 175). Measured with Whisper base
on French: at 175 most content words are lost, at 140 they come back; speed scales it."""
_CODE = re.compile(r"^([a-z]{2,3})(?:-([a-z]{2}|\d{3}))?$")


class EspeakEngine:
    """espeak-ng voices: one per language it knows ("espeak-ng:fr") plus regional variants
    ("espeak-ng:en-us")."""

    name = "espeak-ng"

    def __init__(self, executable: str | None = None, timeout_seconds: float = 10.0) -> None:
        self._exe = executable or shutil.which("espeak-ng")
        self._timeout = timeout_seconds
        self._specs: dict[str, VoiceSpec] = {}
        if self._exe is None:
            log.warning("espeak-ng is not installed: no fallback voices (apt-get install espeak-ng)")
            return
        for code in _espeak_codes(self._exe):
            m = _CODE.match(code)
            assert m is not None
            language, region = m.group(1), m.group(2)
            locale = f"{language}_{region.upper()}" if region else language
            name = ESPEAK_PREFIX + code
            self._specs[name] = VoiceSpec(name, language, locale, 22050, "espeak-ng", "robotic", 1, "espeak-ng")

    def voices(self) -> list[VoiceSpec]:
        return list(self._specs.values())

    def load(self, voice: str) -> None:
        self.synthesize(voice, "ok", SynthOptions())

    def synthesize(self, voice: str, text: str, options: SynthOptions) -> Audio:
        if self._exe is None:
            raise EngineError("espeak-ng is not installed")
        code = voice.removeprefix(ESPEAK_PREFIX)
        wpm = int(min(450, max(80, ESPEAK_WPM * options.speed)))
        cmd = [self._exe, "-v", code, "-s", str(wpm), "-b", "1", "--stdin", "--stdout"]
        try:
            # one line: espeak-ng reads stdin line by line and would pause at each break
            done = subprocess.run(
                cmd, input=text.replace("\n", " ").encode(), capture_output=True, timeout=self._timeout, check=False
            )
        except (subprocess.TimeoutExpired, OSError) as exc:
            raise EngineError(f"espeak-ng failed: {exc}") from exc
        if done.returncode != 0 or not done.stdout:
            raise EngineError(f"espeak-ng exited {done.returncode}: {done.stderr.decode(errors='replace')[-300:]}")
        pcm = read_wav_bytes(done.stdout)
        return Audio(pcm.data, pcm.sample_rate)


def _espeak_codes(exe: str) -> list[str]:
    """Language codes from ``espeak-ng --voices``: the plain ones, plus a plain code for
    languages listed only with regions (fr-fr → fr), minus duplicates like fr-fr itself."""
    try:
        out = subprocess.run([exe, "--voices"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        log.warning("cannot list espeak-ng voices", error=str(exc))
        return []
    codes: list[str] = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 2:
            continue
        m = _CODE.match(parts[1].lower())
        if m is None:
            continue
        language, region = m.group(1), m.group(2)
        if language not in codes:
            codes.append(language)  # espeak-ng -v fr resolves to its main French voice
        if region and region != language and parts[1].lower() not in codes:
            codes.append(parts[1].lower())
    return codes
