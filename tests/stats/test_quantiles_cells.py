"""Exact pooled quantiles/min/max, value counts and histograms against pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from stats_helpers import federate, split

from privcomp.protocols.stats_quantile import (
    KEY_MAX,
    KEY_MIN,
    float_keys,
    keys_to_floats,
    sorted_keys,
)


def test_float_keys_order_preserving_and_invertible() -> None:
    x = np.array([-np.inf, -1e300, -1.5, -5e-324, -0.0, 0.0, 5e-324, 2.0, 1e308, np.inf])
    k = float_keys(x)
    assert (np.diff(k) >= 0).all()
    assert k[4] == k[5] == 0
    back = keys_to_floats(k)
    assert np.array_equal(back[x != 0], x[x != 0])


def test_quantiles_exact_random_with_ties_and_negatives() -> None:
    rng = np.random.default_rng(11)
    df = pd.DataFrame(
        {"a": rng.normal(-50, 20, 2001), "b": rng.integers(-3, 4, 2001).astype(float)}
    )
    df.loc[rng.random(len(df)) < 0.2, "a"] = np.nan
    t = federate(split(df, 3)).table("patients")
    qs = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    got = t.quantile(qs)
    want = df.quantile(qs)
    # Order statistics are exact; numpy's interpolation is replayed operation for operation.
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())
    assert list(got.index) == qs
    assert (t.min() == df.min()).all()
    assert (t.max() == df.max()).all()
    assert (t.median() == df.median()).all()
    assert t["a"].quantile(0.3) == df["a"].quantile(0.3)
    assert t["b"].min() == -3.0
    assert t["b"].max() == 3.0
    s = t["a"].quantile([0.25, 0.5, 0.75])
    assert list(s.index) == [0.25, 0.5, 0.75]
    np.testing.assert_array_equal(s.to_numpy(), df["a"].quantile([0.25, 0.5, 0.75]).to_numpy())


def test_quantiles_real_data(diabetes: pd.DataFrame) -> None:
    t = federate(split(diabetes, 3)).table("patients")
    got = t["bmi"].quantile([0.25, 0.5, 0.75])
    np.testing.assert_array_equal(
        got.to_numpy(), diabetes["bmi"].quantile([0.25, 0.5, 0.75]).to_numpy()
    )
    assert got.attrs["error_bound"][0.5] < 1e-15


def test_value_counts_and_histogram(random_frame: pd.DataFrame) -> None:
    t = federate(split(random_frame, 3)).table("patients")
    vc = t["region"].value_counts()
    want = random_frame["region"].value_counts()
    assert vc.name == "count"
    assert vc.index.name == "region"
    pd.testing.assert_series_equal(vc.sort_index(), want.sort_index())
    prop = t["sex"].value_counts(normalize=True)
    want_p = random_frame["sex"].value_counts(normalize=True)
    np.testing.assert_allclose(prop.sort_index(), want_p.sort_index(), rtol=1e-12)
    bins = [0, 20, 40, 60, 80, 120]
    h = t["age"].histogram(bins=bins)
    want_h = pd.cut(random_frame["age"], bins, right=False).value_counts(sort=False)
    assert h.tolist() == want_h.tolist()
    assert h.index.closed == "left"


def test_wrong_inputs_raise() -> None:
    t = federate([pd.DataFrame({"x": np.arange(20.0)})] * 2).table("patients")
    with pytest.raises(ValueError, match="quantiles"):
        t.quantile([1.5])
    with pytest.raises(ValueError, match="bins"):
        t["x"].histogram([3, 1])
    with pytest.raises(KeyError):
        t["nope"]


def test_sorted_keys_equals_sorting_the_keys() -> None:
    rng = np.random.default_rng(4)
    x = np.r_[rng.normal(0, 1e3, 1000), [-0.0, 0.0, -np.inf, np.inf, 5e-324, -5e-324]]
    assert np.array_equal(sorted_keys(x), np.sort(float_keys(x)))
    assert sorted_keys(x)[0] >= KEY_MIN
    assert sorted_keys(x)[-1] <= KEY_MAX


def test_worker_refuses_probabilities_outside_unit_interval() -> None:
    # The coordinator-side check can be bypassed by a raw Query (as a gRPC worker receives):
    # q = 1.5 used to be clamped silently to the maximum instead of raising.
    from privcomp.errors import ConfigurationError
    from privcomp.policy.query import Query

    fed = federate([pd.DataFrame({"x": np.arange(20.0)}), pd.DataFrame({"x": np.arange(20.0)})])
    for q in (1.5, -0.1, float("nan")):
        query = Query("patients", "quantile", ("x",), ("quantile",), quantiles=(q,))
        with pytest.raises(ConfigurationError, match=r"\[0, 1\]"):
            fed.run(query)
    ok = Query("patients", "quantile", ("x",), ("quantile",), quantiles=(1.0,))
    assert fed.run(ok)[1].values[0, 0] == 19.0  # type: ignore[union-attr]
