"""CKKS at the large presets (N=16384 with Galois keys, N=32768 without): slow, nightly.

Same frozen tolerance rule as ``test_ckks.py``: the preset's documented
``error_for(|result|) = error_bound + rel_error_bound * |result|``.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tenseal")

from sklearn.datasets import load_diabetes

from privcomp import ckks

pytestmark = [pytest.mark.ckks, pytest.mark.slow]


def _depth_circuit(
    x: np.ndarray, v: ckks.CKKSVector, depth: int
) -> tuple[ckks.CKKSVector, np.ndarray]:
    """Alternate ct x ct products and plain halvings: uses every level of the chain."""
    enc, want = v, x.copy()
    for i in range(depth):
        if i % 2 == 0:
            enc, want = enc * v, want * x
        else:
            enc, want = enc * 0.5, want * 0.5
    return enc, want


def test_n16384_deep_circuit_dot_and_matmul() -> None:
    ctx = ckks.context("n16384")
    pub = ckks.context_from_bytes(ctx.public().to_bytes())

    def tol(want: np.ndarray | float) -> float:
        return ctx.params.error_for(float(np.abs(want).max()))

    rng = np.random.default_rng(16384)
    x = rng.uniform(-1, 1, ctx.slot_count)
    m = rng.uniform(-1, 1, (ctx.slot_count, 16))
    vx = pub.encrypt(x)
    enc, want = _depth_circuit(x, vx, ctx.params.depth)
    back = ckks.vector_from_bytes(enc.to_bytes(), ctx)
    assert np.abs(ctx.decrypt(back) - want).max() <= tol(want)
    assert abs(ctx.decrypt(ckks.vector_from_bytes(vx.dot(x).to_bytes(), ctx))[0] - x @ x) <= tol(
        x @ x
    )
    got = ctx.decrypt(ckks.vector_from_bytes(vx.matmul_plain(m).to_bytes(), ctx))
    assert np.abs(got - x @ m).max() <= tol(x @ m)
    features, target = load_diabetes(return_X_y=True)
    xty = ctx.decrypt(ctx.encrypt(target / 400).matmul_plain(features))
    assert np.abs(xty - (target / 400) @ features).max() <= tol((target / 400) @ features)
    released = ctx.decrypt_release(ctx.encrypt(x), decimals=2)
    assert np.abs(released - x).max() <= ctx.release_bound(2)


def test_n32768_without_galois_keys() -> None:
    ctx = ckks.context("n32768", galois_keys=False)
    assert ctx.params.total_bits <= ckks.HE_STD_128_MAX_BITS[32768]
    x = np.random.default_rng(32768).uniform(-1, 1, ctx.slot_count)
    enc, want = _depth_circuit(x, ctx.encrypt(x), ctx.params.depth)
    assert np.abs(ctx.decrypt(enc) - want).max() <= ctx.params.error_for(1.0)
    pub = ctx.public(galois_keys=False)
    assert not pub.is_private
    assert not pub.has_galois_keys
