"""Horizontal count/sum/mean/var/std/cov/corr/describe/groupby against pandas on pooled rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from stats_helpers import assert_close, federate, split

MOMENTS = ["count", "sum", "mean", "var", "std"]


@pytest.mark.parametrize("parts", [2, 3, 4])
def test_moments_random_match_pandas(random_frame: pd.DataFrame, parts: int) -> None:
    t = federate(split(random_frame, parts)).table("patients")
    num = random_frame.select_dtypes("number")
    std = num.std().to_numpy()
    for op in MOMENTS:
        got, want = getattr(t, op)(), getattr(num, op)()
        assert list(got.index) == list(want.index)
        assert got.attrs["job_id"].startswith("job-")
        assert_close(got, want, scale=std if op in ("sum", "mean") else 0.0)
    assert got.attrs["error_bound"].keys() == set(num.columns)


def test_moments_real_data_diabetes(diabetes: pd.DataFrame) -> None:
    t = federate(split(diabetes, 3)).table("patients")
    num = diabetes.select_dtypes("number")
    std = num.std().to_numpy()
    assert len(t) == len(diabetes)
    assert_close(t.mean(), num.mean(), scale=std)
    assert_close(t.sum(), num.sum(), scale=std * len(num))
    assert_close(t.var(), num.var())
    assert_close(t.std(), num.std())
    assert_close(t.cov(), num.cov(), scale=np.outer(std, std))
    assert_close(t.corr(), num.corr(), scale=1.0)
    assert_close(t["bmi"].mean(), num["bmi"].mean(), scale=std[2])


def test_describe_is_one_job_shaped_like_pandas(diabetes: pd.DataFrame) -> None:
    t = federate(split(diabetes, 3)).table("patients")
    got = t.describe()
    want = diabetes.describe()
    assert list(got.index) == list(want.index)
    assert list(got.columns) == list(want.columns)
    std = want.loc["std"].to_numpy()
    assert_close(got, want, scale=np.broadcast_to(std, want.shape))
    # min, quartiles and max are exact order statistics of the pooled data (or interpolations).
    assert (got.loc[["min", "max"]] == want.loc[["min", "max"]]).all().all()
    assert isinstance(got.attrs["job_id"], str)


def test_large_magnitude_no_cancellation() -> None:
    """10^6 rows per party, values ~10^6 with std 1: Σx² ~ 1e18 keeps 1e-9 accuracy."""
    rng = np.random.default_rng(3)
    frames = [pd.DataFrame({"x": 1e6 + rng.normal(0, 1, 1_000_000)}) for _ in range(3)]
    pooled = pd.concat(frames, ignore_index=True)
    t = federate(frames).table("patients")
    assert_close(t.var(), pooled.var())
    assert_close(t.std(), pooled.std())
    assert_close(t.mean(), pooled.mean())


def test_missing_values_pairwise_like_pandas(random_frame: pd.DataFrame) -> None:
    df = random_frame.copy()
    rng = np.random.default_rng(5)
    for col in ("bmi", "age"):
        df.loc[rng.random(len(df)) < 0.1, col] = np.nan
    t = federate(split(df, 3)).table("patients")
    num = df.select_dtypes("number")
    assert_close(t.count(), num.count())
    assert_close(t.mean(), num.mean(), scale=num.std().to_numpy())
    assert_close(t.var(), num.var())
    sd = num.std().to_numpy()
    assert_close(t.cov(), num.cov(), scale=np.outer(sd, sd))
    assert_close(t.corr(), num.corr(), scale=1.0)


def test_groupby_moments_match_pandas(random_frame: pd.DataFrame) -> None:
    t = federate(split(random_frame, 3)).table("patients")
    for op in MOMENTS:
        got = getattr(t.groupby("region")[["bmi", "sbp"]], op)()
        want = getattr(random_frame.groupby("region")[["bmi", "sbp"]], op)()
        assert list(got.index) == list(want.index)
        assert got.index.name == "region"
        assert_close(got, want, scale=30.0 if op in ("mean", "sum") else 0.0)
    s = t.groupby("sex")["bmi"].mean()
    assert isinstance(s, pd.Series)
    assert_close(s, random_frame.groupby("sex")["bmi"].mean())
    assert (t.groupby("sex").size() == random_frame.groupby("sex").size()).all()


def test_filter_and_column_selection(random_frame: pd.DataFrame) -> None:
    t = federate(split(random_frame, 3)).table("patients")
    sub = t[(t["age"] >= 30) & (t["sex"] == "F")][["bmi", "age"]]
    want = random_frame[(random_frame["age"] >= 30) & (random_frame["sex"] == "F")]
    assert len(sub) == len(want)
    assert_close(sub.mean(), want[["bmi", "age"]].mean())


def test_results_identical_at_every_party_and_sum_exact() -> None:
    """Integer data: the exact wide-ring sum equals the integer total, bit for bit."""
    frames = [
        pd.DataFrame({"x": np.arange(i * 1000, (i + 1) * 1000, dtype=float)}) for i in range(3)
    ]
    t = federate(frames).table("patients")
    assert float(t.sum()["x"]) == float(sum(range(3000)))
    assert t["x"].count() == 3000
