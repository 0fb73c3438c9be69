"""Generated protobuf code is current, and ``generate.py --check`` detects drift."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GENERATE = REPO / "protos" / "generate.py"


def _check(target: Path) -> subprocess.CompletedProcess[str]:
    bin_dir = str(Path(sys.executable).parent)  # protoc-gen-mypy lives next to the interpreter
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, str(GENERATE), "--check", "--target", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_generated_code_is_current_and_drift_is_detected(tmp_path: Path) -> None:
    if not GENERATE.exists():
        pytest.skip("protos/ not present")
    copy = tmp_path / "proto"
    shutil.copytree(REPO / "privcomp" / "proto", copy, ignore=shutil.ignore_patterns("__pycache__"))
    ok = _check(copy)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    stale = copy / "v1" / "peer_pb2.py"
    stale.write_text(stale.read_text() + "\n# edited by hand\n")
    bad = _check(copy)
    assert bad.returncode == 1
    assert "peer_pb2.py" in bad.stdout


def test_no_pickle_in_the_runtime() -> None:
    """T16 (static): no pickle-family module is imported by privcomp."""
    banned = (
        "import pickle",
        "from pickle",
        "import dill",
        "cloudpickle",
        "import marshal",
        "import shelve",
        "torch.load",
    )
    for path in (REPO / "privcomp").rglob("*.py"):
        text = path.read_text()
        assert not any(b in text for b in banned), path
