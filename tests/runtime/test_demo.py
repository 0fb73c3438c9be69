"""``privcomp demo`` end to end: exit 0, the comparison table, nothing left behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _demo_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("privcomp-demo-*")}


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def test_privcomp_demo_runs_cleanly() -> None:
    before = _demo_dirs()
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "privcomp.cli.main", "demo", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    took = time.monotonic() - t0
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all figures match the plaintext answers" in out.stdout
    for label in (
        "count",
        "sum of cost",
        "mean cost",
        "variance of cost",
        "count(hosp. A) x mean cost(insurer)",
    ):
        assert label in out.stdout
    assert re.search(r"stopped 4 processes", out.stdout)
    assert "no dealer" in out.stdout  # the triple source is said on screen
    assert _demo_dirs() == before  # temporary directory removed
    assert _children(os.getpid()) == []  # no orphan (the demo's children were its own)
    assert took < 60
