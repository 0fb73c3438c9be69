"""Regenerate ``privcomp/proto`` from ``protos/privcomp/proto/v1/*.proto`` (dev tool, not shipped).

Usage::

    python protos/generate.py          # replace privcomp/proto with a fresh generation
    python protos/generate.py --check  # exit 1 if the committed code differs from a fresh one

Needs ``grpcio-tools`` (pinned, see PINNED_TOOLS) and ``mypy-protobuf`` (``protoc-gen-mypy`` on
PATH: activate the virtual environment first).
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.metadata
import os
import shutil
import sys
import tempfile
from pathlib import Path

PINNED_TOOLS = "1.85.1"
PINNED_MYPY_PROTOBUF = "5.1.0"
PROTO_ROOT = Path(__file__).resolve().parent
REPO = PROTO_ROOT.parent
TARGET = REPO / "privcomp" / "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _generate(out_root: Path) -> None:
    from grpc_tools import protoc  # dev-only dependency

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = str(Path(protoc.__file__).resolve().parent / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    cwd = Path.cwd()
    os.chdir(PROTO_ROOT)  # protoc records paths relative to -I; keep output independent of cwd
    try:
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed (is protoc-gen-mypy on PATH? activate the venv)")
    finally:
        os.chdir(cwd)
    for pkg in (out_root / "privcomp" / "proto", out_root / "privcomp" / "proto" / "v1"):
        init = pkg / "__init__.py"
        init.write_text('"""Generated protobuf code (do not edit; see protos/README.md)."""\n')


def _diff(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    out = [f"only in {a}: {n}" for n in cmp.left_only]
    out += [f"only in committed tree: {n}" for n in cmp.right_only]
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    out += [f"differs: {n}" for n in mismatch + errors]
    for sub in cmp.common_dirs:
        out += _diff(a / sub, b / sub)
    return out


def main(argv: list[str] | None = None) -> int:
    """Generate (or check) the committed protobuf code; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail on drift, write nothing")
    parser.add_argument("--target", type=Path, default=TARGET, help="generated tree to check")
    args = parser.parse_args(argv)
    target: Path = args.target
    for dist, pin in (("grpcio-tools", PINNED_TOOLS), ("mypy-protobuf", PINNED_MYPY_PROTOBUF)):
        found = importlib.metadata.version(dist)
        if found != pin:
            print(f"{dist} {found} installed, {pin} required (pip install {dist}=={pin})")
            return 2
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        _generate(out)
        fresh = out / "privcomp" / "proto"
        if args.check:
            if not target.exists():
                print(f"{target} is missing: run python protos/generate.py")
                return 1
            problems = _diff(fresh, target)
            if problems:
                print("generated protobuf code is stale; run python protos/generate.py")
                print("\n".join(f"  {p}" for p in problems))
                return 1
            print("generated protobuf code is current")
            return 0
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(fresh, target)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
