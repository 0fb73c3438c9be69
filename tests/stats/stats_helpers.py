"""Helpers of the joint-statistics tests (a uniquely named module: ``conftest`` is ambiguous
when several test directories have one)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

import privcomp.federation as pl
from privcomp.core.rng import InsecureSeededRandom


def split(df: pd.DataFrame, parts: int, seed: int = 0) -> list[pd.DataFrame]:
    """Split rows into ``parts`` contiguous, unequal chunks."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, len(df)), size=parts - 1, replace=False))
    edges = [0, *cuts.tolist(), len(df)]
    return [df.iloc[a:b].reset_index(drop=True) for a, b in itertools.pairwise(edges)]


def federate(
    frames: list[pd.DataFrame], dataset: str = "patients", triples: str = "dealer", **kw: object
) -> pl.Federation:
    """A local federation of ``frames``, one party each.

    The comparisons of these tests take their material from an explicit trusted dealer, for
    speed; ``test_triples_source.py`` runs the default HE source (``triples="he"``).
    """
    data = {f"party{i}": {dataset: f} for i, f in enumerate(frames)}
    return pl.local(data, rng=InsecureSeededRandom(7), triples=triples, **kw)  # type: ignore[arg-type]


def assert_close(
    actual: object, expected: object, *, scale: object = 0.0, rtol: float = 1e-9
) -> None:
    """|actual - expected| <= rtol * max(|expected|, scale), elementwise (NaN == NaN).

    ``scale`` is the figure's natural magnitude when the figure itself may be ~0 by
    cancellation (a mean of centred data is ~1e-17: compare it at 1e-9 of the std).
    """
    a = np.asarray(actual, dtype=float)
    e = np.asarray(expected, dtype=float)
    assert a.shape == e.shape
    assert np.array_equal(np.isnan(a), np.isnan(e))
    tol = rtol * np.maximum(np.abs(e), np.asarray(scale, dtype=float))
    ok = np.isnan(e) | (np.abs(a - e) <= tol)
    assert ok.all(), f"max violation {np.nanmax(np.abs(a - e) - tol)}"
