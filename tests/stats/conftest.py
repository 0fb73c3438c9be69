"""Shared fixtures of the joint-statistics tests: pooled data split across parties."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes

import privcomp.local as pl
from privcomp.core.rng import InsecureSeededRandom


def split(df: pd.DataFrame, parts: int, seed: int = 0) -> list[pd.DataFrame]:
    """Split rows into ``parts`` contiguous, unequal chunks."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, len(df)), size=parts - 1, replace=False))
    edges = [0, *cuts.tolist(), len(df)]
    return [df.iloc[a:b].reset_index(drop=True) for a, b in itertools.pairwise(edges)]


def federate(frames: list[pd.DataFrame], dataset: str = "patients", **kw: object) -> pl.Federation:
    data = {f"party{i}": {dataset: f} for i, f in enumerate(frames)}
    return pl.local(data, rng=InsecureSeededRandom(7), **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def diabetes() -> pd.DataFrame:
    df = load_diabetes(as_frame=True).frame
    df["sex"] = np.where(df["sex"] > 0, "M", "F")
    return df


@pytest.fixture
def random_frame() -> pd.DataFrame:
    rng = np.random.default_rng(42)
    n = 3000
    return pd.DataFrame(
        {
            "age": rng.integers(0, 100, n).astype(float),
            "bmi": rng.normal(27, 5, n),
            "sbp": rng.normal(1e6, 3.0, n),  # mean >> std: Σx² - (Σx)²/n would cancel
            "tiny": rng.normal(0, 1e-7, n),
            "sex": rng.choice(["F", "M"], n),
            "region": rng.choice(["north", "south", "east"], n),
        }
    )


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
