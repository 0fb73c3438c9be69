"""The README's Python examples run as written (they are the first thing a user copies)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_simulate_example_runs_and_matches_numpy() -> None:
    block = next(b for b in _python_blocks() if "pc.simulate(" in b)
    scope: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), scope)  # our own README
    outs = scope["outs"]
    assert isinstance(outs, list)
    a, b = scope["a"], scope["b"]
    s, p, c = outs[0]
    np.testing.assert_allclose(s, np.asarray(a) + np.asarray(b), atol=2**-15)
    np.testing.assert_allclose(p, np.asarray(a) * np.asarray(b), atol=2**-14)
    np.testing.assert_array_equal(c, (np.asarray(a) < np.asarray(b)).astype(np.int64))
    assert all(np.array_equal(o[0], outs[0][0]) for o in outs)  # every party got the same


@pytest.mark.ckks
def test_engines_example_runs() -> None:
    pytest.importorskip("tenseal")
    block = next(b for b in _python_blocks() if "paillier.keygen" in b)
    block = block.replace("paillier.keygen(3072)", "paillier.keygen(2048)")  # keep the test fast
    scope: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), scope)  # our own README
    sk, packed = scope["sk"], scope["packed"]
    assert float(sk.decrypt_packed(packed.sum())) == 499500.0
