"""Disclosure control: k-threshold (T12), derived cells, differencing and repeats (T13), rules."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from stats_helpers import federate

from privcomp.errors import DifferencingRefused, GroupTooSmall, PolicyViolation, PrivcompError


def _groups_frame() -> tuple[pd.DataFrame, pd.DataFrame]:
    sizes = {"g01": 1, "g05": 5, "g10": 10, "g11": 11, "g500": 500}
    a = pd.DataFrame({"grp": [g for g, n in sizes.items() for _ in range(n)]})
    a["x"] = np.arange(len(a), dtype=float)
    b = pd.DataFrame({"grp": ["g500"] * 300, "x": np.arange(300.0)})
    return a, b


def test_t12_small_groups_refused_naming_group_and_k() -> None:
    a, b = _groups_frame()
    t = federate([a, b]).table("patients")
    with pytest.raises(GroupTooSmall) as info:
        t.groupby("grp")["x"].mean()
    assert info.value.k == 11
    assert info.value.group == "grp='g01'"
    assert info.value.party == "party0"
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, PrivcompError)
    with pytest.raises(GroupTooSmall):
        t["grp"].value_counts()
    with pytest.raises(GroupTooSmall):
        t["grp"].value_counts(normalize=True)  # percentages reveal the same small cells
    ok = t[t["grp"].isin(["g11", "g500"])].groupby("grp")["x"].count()
    assert ok.to_dict() == {"g11": 11, "g500": 800}


def test_t12_each_party_counts_its_own_records() -> None:
    """6 + 6 = 12 >= k jointly, but each party would expose 6 of its records to the other."""
    a = pd.DataFrame({"grp": ["s"] * 6 + ["big"] * 40, "x": np.arange(46.0)})
    b = pd.DataFrame({"grp": ["s"] * 6 + ["big"] * 40, "x": np.arange(46.0)})
    with pytest.raises(GroupTooSmall, match="grp='s'"):
        federate([a, b]).table("patients").groupby("grp")["x"].sum()


def test_t12_custom_k_and_histogram_bins() -> None:
    a = pd.DataFrame({"age": np.r_[np.full(30, 25.0), np.full(3, 70.0)]})
    b = pd.DataFrame({"age": np.full(30, 35.0)})
    t = federate([a, b], policies={"party0": {"k": 3}, "party1": {"k": 3}}).table("patients")
    assert t["age"].histogram([0, 50, 100]).tolist() == [60, 3]
    t2 = federate([a, b]).table("patients")
    with pytest.raises(GroupTooSmall, match=r"age in \[50, 100\)"):
        t2["age"].histogram([0, 50, 100])


def test_t12_derived_complement_cell_refused() -> None:
    """Rows with a missing key = total - sum of groups: a derivable small cell."""
    a = pd.DataFrame({"sex": ["F"] * 20 + ["M"] * 20 + [None] * 4, "x": np.arange(44.0)})
    b = pd.DataFrame({"sex": ["F"] * 30 + ["M"] * 30, "x": np.arange(60.0)})
    fed = federate([a, b])
    t = fed.table("patients")
    assert len(t) == 104
    with pytest.raises(DifferencingRefused):
        t["sex"].value_counts()  # 104 - (F + M) = 4 rows of party0
    fed2 = federate([a, b])
    t2 = fed2.table("patients")
    assert t2["sex"].value_counts().sum() == 100
    with pytest.raises(DifferencingRefused):
        len(t2)  # the other order is refused too


def test_t13_differencing_and_tracker_refused_repeat_cached() -> None:
    rng = np.random.default_rng(1)
    a = pd.DataFrame({"pid": np.arange(200), "bmi": rng.normal(27, 4, 200)})
    b = pd.DataFrame({"pid": np.arange(200, 400), "bmi": rng.normal(27, 4, 200)})
    fed = federate([a, b])
    t = fed.table("patients")
    first = t["bmi"].mean()
    # (a) all patients, then all but one: the difference isolates one record.
    with pytest.raises(DifferencingRefused) as info:
        t[t["pid"] != 17]["bmi"].mean()
    assert info.value.k == 11
    # (b) tracker: a padding set of 50, then the padding plus the target.
    pad = t[(t["pid"] >= 100) & (t["pid"] < 150)]
    pad["bmi"].mean()
    with pytest.raises(DifferencingRefused):
        t[((t["pid"] >= 100) & (t["pid"] < 150)) | (t["pid"] == 17)]["bmi"].mean()
    # (c) the same query 100 times: the identical cached answer, one job.
    answers = [t["bmi"].mean() for _ in range(100)]
    assert all(x == first and x.attrs["job_id"] == first.attrs["job_id"] for x in answers)
    # Sets differing by >= k are fine.
    t[t["pid"] >= 20]["bmi"].mean()


def test_rules_per_requester_columns_and_operations() -> None:
    a = pd.DataFrame({"age": np.arange(30.0), "bmi": np.arange(30.0)})
    b = pd.DataFrame({"age": np.arange(30.0), "bmi": np.arange(30.0)})
    pol = {"requesters": {"bob": {"patients": {"columns": ["age"], "operations": ["mean"]}}}}
    bob = federate([a, b], policies={"party1": pol}, requester="bob").table("patients")
    assert bob["age"].mean() == 14.5
    with pytest.raises(PolicyViolation, match="'bmi'"):
        bob["bmi"].mean()
    with pytest.raises(PolicyViolation, match="'var'"):
        bob["age"].var()
    with pytest.raises(PolicyViolation, match="'max'"):
        bob["age"].max()
    alice = federate([a, b], policies={"party1": pol}, requester="alice").table("patients")
    assert alice["bmi"].var() == pytest.approx(np.var(np.r_[a.bmi, b.bmi], ddof=1), rel=1e-12)


def test_refusal_stops_every_party_promptly() -> None:
    a, b = _groups_frame()
    t = federate([a, b]).table("patients")
    start = time.monotonic()
    with pytest.raises(GroupTooSmall):
        t.groupby("grp")["x"].mean()
    assert time.monotonic() - start < 5.0  # nobody waited for a round deadline


def test_cache_not_stale_after_data_changed_and_growth_is_guarded() -> None:
    rng = np.random.default_rng(3)
    a = pd.DataFrame({"bmi": rng.normal(27, 4, 100)})
    b = pd.DataFrame({"bmi": rng.normal(27, 4, 100)})
    fed = federate([a, b])
    first = fed.table("patients")["bmi"].mean()
    assert first == fed.table("patients")["bmi"].mean()  # cached
    # In-place change of a value: the same query must not return the old answer.
    a.loc[0, "bmi"] += 1000.0
    changed = fed.table("patients")["bmi"].mean()
    expected = float(pd.concat([a, b])["bmi"].mean())
    assert abs(float(changed) - expected) <= 1e-9 * abs(expected)
    assert changed.attrs["job_id"] != first.attrs["job_id"]
    # One appended row: the new set differs from the released one by 1 < k rows.
    a.loc[len(a)] = [30.0]
    with pytest.raises(DifferencingRefused):
        fed.table("patients")["bmi"].mean()
    # k more rows: released, and equal to pandas on the pooled rows.
    for _ in range(11):
        a.loc[len(a)] = [25.0]
    grown = fed.table("patients")["bmi"].mean()
    expected = float(pd.concat([a, b])["bmi"].mean())
    assert abs(float(grown) - expected) <= 1e-9 * abs(expected)
