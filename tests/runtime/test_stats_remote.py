"""Joint statistics over gRPC (``pc.connect``) equal local mode (``pc.local``) and pandas.

One module-scoped deployment — a coordinator, three hospital workers and a dealer, each a
separate process on 127.0.0.1 with mTLS — serves the horizontal tests; its data is a split of
scikit-learn's diabetes table written to one CSV per party. Tolerances: remote results are
*identical* to local mode's (same programs, same exact secure sums, same float64 steps);
against pandas on the pooled rows 1e-9 relative for moments, and quantiles/min/max equal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes

from privcomp.client import Federation, JobInfo, JobState, refusal_error, stats_tables
from privcomp.demo import Deployment
from privcomp.errors import (
    ConfigurationError,
    DifferencingRefused,
    GroupTooSmall,
    JobFailedError,
    PolicyViolation,
)
from privcomp.federation import Federation as LocalFederation
from privcomp.federation import local
from privcomp.jobs.model import JobSpec
from privcomp.jobs.stats_query import release_from_arrays, release_to_arrays, validate_params
from privcomp.policy.query import Query
from privcomp.protocols.stats_job import Moments
from privcomp.protocols.stats_quantile import QuantileRelease
from privcomp.rpc.stats_spec import needs_material, query_from_spec, query_to_spec

ROOT = Path(__file__).resolve().parents[2]
HOSPITALS = ("hospital_a", "hospital_b", "hospital_c")
#: hospital_c does not release column s6 (its policy); the other tests use COLS.
POLICIES: dict[str, dict[str, Any]] = {
    "hospital_c": {
        "k": 11,
        "datasets": {
            "patients": {
                "columns": ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "target"]
            }
        },
    }
}
COLS = ["age", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "target"]


def diabetes() -> pd.DataFrame:
    df = load_diabetes(as_frame=True).frame
    df["sex"] = np.where(df["sex"] > 0, "M", "F")
    return df


def split(df: pd.DataFrame) -> dict[str, dict[str, pd.DataFrame]]:
    bounds = {"hospital_a": (0, 150), "hospital_b": (150, 300), "hospital_c": (300, len(df))}
    return {p: {"patients": df.iloc[a:b].reset_index(drop=True)} for p, (a, b) in bounds.items()}


@pytest.fixture(scope="module")
def feds() -> Iterator[tuple[Federation, LocalFederation, pd.DataFrame, Deployment]]:
    df = diabetes()
    data = split(df)
    with Deployment.start(data, POLICIES, dealer=True) as dep, dep.connect(triples="dealer") as fed:
        yield fed, local(data, POLICIES, triples="dealer"), df, dep


def same(remote: Any, loc: Any) -> None:
    """Identical values, index and columns (NaN equal to NaN)."""
    if isinstance(remote, pd.DataFrame):
        pd.testing.assert_frame_equal(remote, loc, check_exact=True)
    elif isinstance(remote, pd.Series):
        pd.testing.assert_series_equal(remote, loc, check_exact=True)
    else:
        assert float(remote) == float(loc)


def close(got: np.ndarray, want: np.ndarray, scale: pd.Series | float | None = None) -> None:
    """Within 1e-9 relative, plus 1e-9 of the magnitudes ``scale`` summed (per column)."""
    bound = 1e-9 * np.abs(want)
    if scale is not None:
        bound = bound + 1e-9 * np.asarray(scale, dtype=np.float64)
    assert np.all(np.abs(got - want) <= bound), np.max(np.abs(got - want) - bound)


def test_parties_and_schemas_equal_local(feds: Any) -> None:
    fed, loc, _, _ = feds
    remote = fed.parties()
    assert remote["dealer"] == {}
    assert {p: remote[p] for p in HOSPITALS} == loc.parties()
    assert list(fed.table("patients").columns) == list(loc.table("patients").columns)


def test_moments_equal_local_and_pandas(feds: Any) -> None:
    fed, loc, df, _ = feds
    t, tl = fed.table("patients")[COLS], loc.table("patients")[COLS]
    scale = {"sum": df[COLS].abs().sum(), "mean": df[COLS].abs().mean()}
    for op in ("count", "sum", "mean", "var", "std"):
        r = getattr(t, op)()
        same(r, getattr(tl, op)())
        # Relative to the magnitude summed: the centred columns' sums are ~0 (pandas' own
        # float64 rounding is ~1e-16 of sum |x| there).
        close(r.to_numpy(), getattr(df[COLS], op)().to_numpy(), scale.get(op))
        assert r.attrs["job_id"]
    for op in ("cov", "corr"):
        r = getattr(t, op)()
        same(r, getattr(tl, op)())
        np.testing.assert_allclose(r.to_numpy(), getattr(df[COLS], op)().to_numpy(), rtol=1e-9)
    assert len(t) == len(df)
    same(t["bmi"].mean(), tl["bmi"].mean())


def test_describe_and_quantiles_equal_local(feds: Any) -> None:
    fed, loc, df, _ = feds
    t, tl = fed.table("patients")[COLS], loc.table("patients")[COLS]
    desc = t.describe()
    same(desc, tl.describe())
    want = df[COLS].describe()
    close(desc.to_numpy()[:3], want.to_numpy()[:3], df[COLS].abs().mean())
    np.testing.assert_array_equal(desc.to_numpy()[3:], want.to_numpy()[3:])
    q = t["target"].quantile([0.1, 0.5, 0.9])
    same(q, tl["target"].quantile([0.1, 0.5, 0.9]))
    np.testing.assert_array_equal(q.to_numpy(), df["target"].quantile([0.1, 0.5, 0.9]).to_numpy())
    assert float(t["bp"].median()) == float(df["bp"].median())
    assert float(t["bmi"].max()) == float(df["bmi"].max())


def test_groupby_counts_and_histogram_equal_local(feds: Any) -> None:
    fed, loc, df, _ = feds
    t, tl = fed.table("patients"), loc.table("patients")
    g = t.groupby("sex")[["bmi", "bp", "target"]].mean()
    same(g, tl.groupby("sex")[["bmi", "bp", "target"]].mean())
    want = df.groupby("sex")[["bmi", "bp", "target"]].mean()
    assert list(g.index) == ["F", "M"]
    np.testing.assert_allclose(g.to_numpy(), want.to_numpy(), rtol=1e-9)
    vc = t["sex"].value_counts()
    same(vc, tl["sex"].value_counts())
    assert vc.to_dict() == df["sex"].value_counts().to_dict()
    h = t["target"].histogram([0, 100, 200, 400])
    same(h, tl["target"].histogram([0, 100, 200, 400]))
    cut = pd.cut(df["target"], [0, 100, 200, 400], right=False).value_counts(sort=False)
    assert h.tolist() == cut.tolist()


def test_k_threshold_refusal_names_group_and_k(feds: Any) -> None:
    fed, _, df, _ = feds
    t = fed.table("patients")
    oldest = t[t["age"] > float(df["age"].quantile(0.99))]  # ~5 patients in all
    with pytest.raises(GroupTooSmall, match=r"k=11") as err:
        oldest["target"].mean()
    assert err.value.k == 11
    assert err.value.group == "rows of the filter"
    assert err.value.party in HOSPITALS
    info = fed.jobs(1)[0]
    assert info.state == JobState.FAILED
    assert "k=11" in info.reason
    assert info.failing_party == err.value.party


def test_differencing_and_column_policy_refusals(feds: Any) -> None:
    fed, _, df, _ = feds
    t = fed.table("patients")
    t["s5"].mean()
    with pytest.raises(DifferencingRefused):
        t[t["age"] != df["age"].iloc[0]]["s5"].mean()  # all patients except a few
    with pytest.raises(PolicyViolation, match="s6"):
        t["s6"].mean()


def test_cli_submits_stats_yaml_and_prints_a_table(feds: Any) -> None:
    _, _, df, dep = feds
    env = {
        **os.environ,
        "PRIVCOMP_COORDINATOR": dep.address,
        "PRIVCOMP_PKI": str(dep.pki_dir),
        "PRIVCOMP_ANALYST": dep.analyst,
    }
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "privcomp.cli.main",
            "submit",
            str(ROOT / "examples/stats_job.yaml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "SUCCEEDED" in out.stdout
    sel = df[df["age"] > 0.0]
    want = sel.groupby("sex")["bmi"].mean()
    lines = [line.split() for line in out.stdout.splitlines()]
    mean_block = out.stdout.split("mean:")[1]
    for sex in ("F", "M"):
        row = next(r for r in (line.split() for line in mean_block.splitlines()) if r[:1] == [sex])
        assert float(row[1]) == pytest.approx(want[sex], rel=1e-3)  # printed rounded
    assert any(r[:1] == ["count:"] for r in lines)


@pytest.mark.parametrize("triples", ["he", "dealer"])
def test_psi_join_corr_and_groupby_equal_local(triples: str) -> None:
    """Vertical: two hospitals hold patients, an insurer holds claims keyed by patient id."""
    df = diabetes()
    ids = np.arange(len(df)) * 7 + 3
    patients = df.assign(patient_id=ids)[["patient_id", "age", "bmi", "sex", "target"]]
    gen = np.random.default_rng(0)
    premium = df["target"] * 3 + gen.normal(0, 20, len(df))
    claims = pd.DataFrame({"patient_id": ids, "premium": premium}).sample(frac=0.8, random_state=1)
    data = {
        "hospital_a": {"patients": patients.iloc[:200]},
        "hospital_b": {"patients": patients.iloc[200:]},
        "insurer": {"claims": claims},
    }
    pooled = patients.merge(claims, on="patient_id").drop(columns=["patient_id"])
    loc = local(data)
    jl = loc.table("patients").join(loc.table("claims"), on="patient_id")
    with (
        Deployment.start(data, dealer=triples == "dealer") as dep,
        dep.connect(triples=triples) as fed,
    ):
        j = fed.table("patients").join(fed.table("claims"), on="patient_id")
        assert len(j) == len(pooled)
        # Cross-party products are fixed-point OLE shares: equal to ~1e-12, not bit-identical.
        corr = j.corr()
        pd.testing.assert_index_equal(corr.columns, jl.corr().columns)
        close(corr.to_numpy(), jl.corr().to_numpy(), 1.0)
        close(corr.to_numpy(), pooled.drop(columns=["sex"]).corr().to_numpy(), 1.0)
        g = j.groupby("sex")["premium"].mean()
        pd.testing.assert_series_equal(g, jl.groupby("sex")["premium"].mean(), rtol=1e-9)
        close(g.to_numpy(), pooled.groupby("sex")["premium"].mean().to_numpy())


# -- the spec mapping (no processes) ---------------------------------------------------------


def test_query_spec_round_trip() -> None:
    where = ("and", ("cmp", "age", ">", np.float64(0.25)), ("isin", "sex", ("M", "F")))
    queries = [
        Query("p", "moments", ("a", "b"), ("corr", "mean"), where=where, requester="x"),
        Query("p", "moments", ("a",), ("mean",), by="sex", ddof=0, requester="x"),
        Query("p", "describe", ("a",), ("count", "max"), quantiles=(0.0, 0.5), requester="x"),
        Query("p", "cells", ("a",), ("histogram",), bins=(0.0, 1.0, 2.5), requester="x"),
        Query(
            "p",
            "moments",
            ("a", "b"),
            ("corr",),
            by="s",
            requester="x",
            join=("c", "id"),
            party_sides=(0, 0, 1),
            column_sides=(0, 1),
            by_side=0,
        ),
    ]
    for q in queries:
        spec = query_to_spec(q, ["h1", "h2", "h3"], triple_source="dealer", dealer="d")
        back = query_from_spec(JobSpec.from_dict(_json_round_trip(spec)), "x")
        assert back == q
        assert back.key() == q.key()
    # The requester is the authenticated caller, never what the spec claims.
    assert query_from_spec(query_to_spec(queries[0], ["h1", "h2"]), "eve").requester == "eve"


def _json_round_trip(spec: JobSpec) -> dict[str, Any]:
    import json

    return json.loads(
        json.dumps(
            {
                "kind": spec.kind,
                "parties": list(spec.parties),
                "dataset": spec.dataset,
                "params": spec.params,
                "triple_source": spec.triple_source,
            }
        )
    )


@pytest.mark.parametrize(
    "params",
    [
        {"statistic": "sql", "columns": ["a"], "ops": ["mean"]},
        {"statistic": "moments", "columns": ["a"], "ops": ["exec"]},
        {"statistic": "moments", "columns": "a", "ops": ["mean"]},
        {"statistic": "moments", "columns": ["a"], "ops": ["mean"], "where": ["eval", "x"]},
        {"statistic": "moments", "columns": ["a"], "ops": ["mean"], "where": ["cmp", "a", "~", 1]},
        {"statistic": "moments", "columns": ["a"], "ops": ["mean"], "code": "print(1)"},
        {"statistic": "quantile", "columns": ["a"], "ops": ["quantile"], "quantiles": [1.5]},
        {"statistic": "cells", "columns": ["a"], "ops": ["histogram"], "bins": [2, 1]},
        {"statistic": "cells", "columns": ["a", "b"], "ops": ["value_counts"]},
        {"statistic": "quantile", "columns": ["a"], "ops": ["quantile"], "group_by": "s"},
        {
            "statistic": "moments",
            "columns": ["a"],
            "ops": ["mean"],
            "join": {"dataset": "c", "on": "id", "party_sides": [0, 0], "column_sides": [0]},
        },
    ],
)
def test_invalid_params_are_refused(params: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        validate_params(params, 2)


def test_deep_filter_is_refused() -> None:
    expr: Any = ["notna", "a"]
    for _ in range(40):
        expr = ["not", expr]
    with pytest.raises(ConfigurationError, match="filter too large"):
        validate_params(
            {"statistic": "moments", "columns": ["a"], "ops": ["mean"], "where": expr}, 2
        )


def test_release_codec_round_trip() -> None:
    m = Moments(
        ["F", "M", 3, 2.5, True],
        np.array([1.0, 2, 3, 4, 5]),
        np.ones((5, 2)),
        np.arange(10.0).reshape(5, 2),
        np.full((5, 2), np.nan),
        var=np.zeros((5, 2)),
    )
    q = QuantileRelease(np.array([3.0, 4.0]), np.array([[1.0, -0.0], [np.inf, 2.0]]))
    for rel in (m, q, (m, q)):
        back = release_from_arrays(release_to_arrays(rel))
        assert repr(back) == repr(rel)
    with pytest.raises(ConfigurationError):
        release_from_arrays({"m.labels": np.array([300.0]), "m.rows": np.zeros(1)})


def test_refusal_error_rebuilds_local_errors() -> None:
    def info(reason: str) -> JobInfo:
        return JobInfo("j1", JobState.FAILED, reason, "hospital_a", "statistics", 0.1, "x")

    e = refusal_error(
        info(
            "GroupTooSmall: group \"sex='F'\" has fewer than k=11 records (policy of party "
            "'hospital_a'); release refused"
        )
    )
    assert isinstance(e, GroupTooSmall)
    assert (e.group, e.k, e.party) == ("sex='F'", 11, "hospital_a")
    assert isinstance(
        refusal_error(info("PolicyViolation: column 'x' is not allowed")), PolicyViolation
    )
    other = refusal_error(info("ProtocolAbort: party hospital_a its policy refused the job"))
    assert isinstance(other, JobFailedError)
    assert "hospital_a" in str(other)


def test_stats_tables_render_describe() -> None:
    spec = query_to_spec(
        Query("p", "describe", ("a", "b"), ("count", "mean"), quantiles=(0.0, 1.0)), ["x", "y"]
    )
    m = Moments([], np.array([4.0]), np.full((1, 2), 4.0), np.ones((1, 2)), np.ones((1, 2)))
    q = QuantileRelease(np.array([4.0, 4.0]), np.array([[0.0, 1.0], [2.0, 3.0]]))
    tables = dict(stats_tables(spec, release_to_arrays((m, q))))
    assert tables["count"].loc["all", "b"] == 4.0
    assert tables["quantiles"].loc[1.0, "b"] == 3.0


def test_dealer_takes_part_only_where_there_is_material_to_deal() -> None:
    base = Query(dataset="p", kind="moments", columns=("x",), ops=("mean",))
    assert not needs_material(base)
    assert needs_material(replace(base, kind="quantile", quantiles=(0.5,)))
    joined = replace(base, join=("c", "id"), party_sides=(0, 1), column_sides=(0,))
    assert not needs_material(joined)
    assert needs_material(replace(joined, ops=("corr",)))
    assert needs_material(replace(joined, by="sex", by_side=1))
