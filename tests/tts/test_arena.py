"""The voices' onnxruntime arenas stay at their warm-up size: a rare oversized run (a long piece
at a slow speed) gives its memory back instead of keeping it for good."""

from __future__ import annotations

from services.models.store import ModelStore
from services.runtime.device import Placement
from services.tts.engines import ArenaBound, PiperEngine, SynthOptions
from services.tts.kokoro import KokoroEngine

CPU = Placement("cpu", 0, "float32")
JOE = "en_US-joe-medium"
LONG = (
    "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden "
    "fence and the children run along the river towards the bridge near the mill, laughing aloud"
)


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_a_slow_long_piece_gives_piper_memory_back(model_store: ModelStore) -> None:
    """Measured without the guard: the same two runs left Piper ~200 MB larger for good."""
    engine = PiperEngine(model_store, CPU, threads=1, warm_chars=200)
    engine.load(JOE)
    session = engine._voice(JOE).session
    assert isinstance(session, ArenaBound) and session.warm_size > 0
    engine.synthesize(JOE, LONG, SynthOptions())
    engine.synthesize(JOE, LONG[:120], SynthOptions(speed=1.1))
    assert session.shrunk == 0, "pieces the warm-up covers keep the arena"
    before = resident_mb()
    for _ in range(2):
        audio = engine.synthesize(JOE, LONG, SynthOptions(speed=0.25))
        assert audio.duration > 25
    assert session.shrunk == 2
    assert resident_mb() - before < 80, f"grew {resident_mb() - before:.0f} MB"


def test_kokoro_shrinks_only_past_its_warm_up(model_store: ModelStore) -> None:
    engine = KokoroEngine(model_store, CPU, threads=1)
    voice = engine.voices()[0].name
    engine.load(voice)
    session = engine._get_model().session
    assert session.warm_size > 0
    engine.synthesize(voice, "Bonjour, voici la réponse à votre question.", SynthOptions())
    assert session.shrunk == 0
    engine.synthesize(voice, "Bonjour, voici la réponse à votre question, avec des détails.", SynthOptions(speed=0.25))
    assert session.shrunk >= 1
