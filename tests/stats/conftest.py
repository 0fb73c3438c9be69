"""Shared fixtures of the joint-statistics tests: pooled data split across parties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes


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
