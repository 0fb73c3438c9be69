"""Vertical joins: multi-party PSI alignment and cross-party products against pandas merge."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pandas as pd
import pytest
from stats_helpers import assert_close

import privcomp.federation as pl
from privcomp.core.rng import InsecureSeededRandom
from privcomp.errors import DuplicateKeyError, GroupTooSmall, PolicyViolation
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.protocols.stats_psi import psi_tags
from privcomp.transport.memory import InMemoryNetwork


def _federation(diabetes: pd.DataFrame, **kw: object) -> tuple[pl.Federation, pd.DataFrame]:
    rng = np.random.default_rng(0)
    pat = diabetes[["age", "bmi", "sex", "target"]].copy()
    pat.insert(0, "patient_id", np.arange(len(pat)) * 7 + 3)
    claims = pd.DataFrame(
        {
            "patient_id": pat["patient_id"],
            "premium": pat["target"] * 3 + rng.normal(0, 20, len(pat)),
            "n_claims": rng.poisson(3, len(pat)).astype(float),
        }
    ).sample(frac=0.8, random_state=1)
    extra = pd.DataFrame(
        {"patient_id": np.arange(10**5, 10**5 + 40), "premium": 1.0, "n_claims": 1.0}
    )
    claims = pd.concat([claims, extra], ignore_index=True)
    data = {
        "hospital_a": {"patients": pat.iloc[:200]},
        "hospital_b": {"patients": pat.iloc[200:].reset_index(drop=True)},
        "insurer": {"claims": claims},
    }
    fed = pl.local(data, rng=InsecureSeededRandom(9), **kw)  # type: ignore[arg-type]
    return fed, pat.merge(claims, on="patient_id")


def test_psi_tags_match_exactly_the_common_keys() -> None:
    sets = [["a", "b", "c", "d"], ["c", "d", "e"], ["d", "x", "a"]]
    net = InMemoryNetwork(3)
    dealer = TrustedDealer(3)
    ctxs = [PartyContext(transport=t, triples=dealer) for t in net.transports]

    async def main() -> list[list[list[bytes]]]:
        return await asyncio.gather(*(psi_tags(c, s) for c, s in zip(ctxs, sets, strict=True)))

    views = asyncio.run(main())
    assert views[0] == views[1] == views[2]
    tags = views[0]
    by_key = {k: tags[p][i] for p, s in enumerate(sets) for i, k in enumerate(s)}
    for p, s in enumerate(sets):
        for i, k in enumerate(s):
            assert tags[p][i] == by_key[k]  # the same key gets the same tag at every party
    assert len(set(by_key.values())) == len(by_key)  # different keys, different tags


@pytest.mark.parametrize("triples", ["he", "dealer"])
def test_join_moments_and_cross_party_corr_match_pandas(
    diabetes: pd.DataFrame, triples: str
) -> None:
    fed, pooled = _federation(diabetes, triples=triples)
    j = fed.table("patients").join(fed.table("claims"), on="patient_id")
    num = pooled.drop(columns=["patient_id", "sex"])
    assert len(j) == len(pooled)
    sd = num.std().to_numpy()
    assert_close(j.mean(), num.mean(), scale=sd)
    assert_close(j.var(), num.var())
    corr = j.corr()
    assert list(corr.columns) == ["age", "bmi", "target", "premium", "n_claims"]
    assert_close(corr, num.corr(), scale=1.0)
    assert_close(j.cov(), num.cov(), scale=np.outer(sd, sd))


@pytest.mark.parametrize("triples", ["he", "dealer"])
def test_join_groupby_key_on_other_side(diabetes: pd.DataFrame, triples: str) -> None:
    fed, pooled = _federation(diabetes, triples=triples)
    j = fed.table("patients").join(fed.table("claims"), on="patient_id")
    got = j.groupby("sex")["premium"].mean()
    assert_close(got, pooled.groupby("sex")["premium"].mean())
    got2 = j.groupby("sex")[["premium", "bmi"]].sum()
    assert_close(got2, pooled.groupby("sex")[["premium", "bmi"]].sum(), scale=1.0)
    assert (
        j.groupby("sex")[["premium"]].count()["premium"] == pooled.groupby("sex")["premium"].count()
    ).all()


def test_join_policy_and_duplicates(diabetes: pd.DataFrame) -> None:
    fed, _ = _federation(
        diabetes, policies={"insurer": {"datasets": {"claims": {"operations": ["mean"]}}}}
    )
    j = fed.table("patients").join(fed.table("claims"), on="patient_id")
    with pytest.raises(PolicyViolation, match="'join'"):
        j.mean()
    small = pd.DataFrame({"pid": [1, 2, 3], "y": [1.0, 2.0, 3.0]})
    big = pd.DataFrame({"pid": np.arange(1, 50), "x": np.arange(49.0)})
    fed2 = pl.local({"a": {"l": big}, "b": {"r": small}})
    with pytest.raises(GroupTooSmall, match="joined rows"):
        len(fed2.table("l").join(fed2.table("r"), on="pid"))
    dup = pd.DataFrame({"pid": [1, 1, *range(2, 40)], "y": np.arange(40.0)})
    fed3 = pl.local({"a": {"l": big}, "b": {"r": dup}})
    with pytest.raises(DuplicateKeyError):
        len(fed3.table("l").join(fed3.table("r"), on="pid"))


def test_join_psi_is_reused_until_a_party_changes_its_keys(
    diabetes: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    import privcomp.policy.vertical as pv

    calls: list[int] = []
    real = pv.psi_tags

    async def counting(ctx: PartyContext, keys: list[str], **kw: Any) -> list[list[bytes]]:
        calls.append(ctx.party_id)
        return await real(ctx, keys, **kw)

    monkeypatch.setattr(pv, "psi_tags", counting)
    fed, pooled = _federation(diabetes, triples="dealer")
    j = fed.table("patients").join(fed.table("claims"), on="patient_id")
    assert len(j) == len(pooled)
    num = pooled.drop(columns=["patient_id", "sex"])
    assert_close(j.corr(), num.corr(), scale=1.0)
    assert_close(j.mean(), num.mean(), scale=num.std().to_numpy())
    assert sorted(calls) == [0, 1, 2]  # one PSI (every party once) for three jobs
    insurer = fed._workers[2]
    claims = insurer.datasets["claims"].iloc[:150]
    insurer.datasets["claims"] = claims  # type: ignore[index]
    assert len(j) == len(pooled.merge(claims[["patient_id"]], on="patient_id"))
    assert sorted(calls) == [0, 0, 1, 1, 2, 2]  # changed keys: a fresh PSI


async def test_dealer_cross_products_hold_1e9_at_a_million_rows() -> None:
    """Issue #4's precision target on the vertical path: 10^6 aligned rows, |values| ~ 10^6,
    mean >> spread in one column; cov/corr within 1e-9 of pandas (dealer masks, exact)."""
    from privcomp.protocols.stats_vertical import Alignment, VerticalRequest
    from privcomp.protocols.stats_vertical_job import vertical_moments

    rows = 10**6
    rng = np.random.default_rng(12)
    base = rng.normal(size=rows)
    left = np.column_stack([base * 1e5 + rng.normal(0, 3e5, rows), 1e6 + rng.normal(0, 1, rows)])
    right = np.column_stack([base * 2 + rng.normal(0, 1, rows), rng.uniform(-1e6, 1e6, rows)])
    names = ("a", "b", "c", "d")
    req = VerticalRequest(names, (0, 0, 1, 1), (0, 1), frozenset({"cov", "corr"}))
    al = Alignment(
        rows, (np.zeros(rows, np.int64), np.ones(rows, np.int64)), *[np.arange(rows)] * 2
    )
    dealer = TrustedDealer(2, rng=InsecureSeededRandom(3))
    net = InMemoryNetwork(2)

    async def party(p: int) -> object:
        ctx = PartyContext(transport=net.transports[p], triples=dealer)
        cols = left if p == 0 else right
        own = {names[2 * p + j]: cols[:, j] for j in range(2)}
        return await vertical_moments(ctx, al, own, req)

    outs = await asyncio.gather(party(0), party(1))
    want = pd.DataFrame(np.hstack([left, right]), columns=list(names))
    for out in outs:
        sd = want.std().to_numpy()
        assert_close(out.cov, want.cov().to_numpy(), scale=np.outer(sd, sd))  # type: ignore[attr-defined]
        assert_close(out.corr, want.corr().to_numpy(), scale=1.0)  # type: ignore[attr-defined]


def test_join_cache_is_not_reused_when_the_same_parties_come_in_another_order(
    diabetes: pd.DataFrame,
) -> None:
    """Review finding: tags are indexed by party position, so a reordered job must re-run
    the PSI (the workers, and their join caches, persist across the two federations)."""
    from privcomp.policy.worker import PartyWorker

    pat = diabetes[["age", "bmi", "target"]].copy()
    pat.insert(0, "pid", np.arange(len(pat)) * 7 + 3)
    claims = pd.DataFrame({"pid": pat["pid"], "premium": pat["target"] * 3.0}).iloc[:300]
    a = PartyWorker("hospital_a", {"patients": pat.iloc[:200].reset_index(drop=True)})
    b = PartyWorker("hospital_b", {"patients": pat.iloc[200:].reset_index(drop=True)})
    ins = PartyWorker("insurer", {"claims": claims.reset_index(drop=True)})
    truth = pat.merge(claims, on="pid").drop(columns="pid")
    for order in ([a, b, ins], [b, a, ins]):
        fed = pl.Federation(order, rng=InsecureSeededRandom(1), triples="dealer", cache=False)
        j = fed.table("patients").join(fed.table("claims"), on="pid")
        assert len(j) == len(truth)
        assert_close(j.corr(), truth.corr(), scale=1.0)
        assert_close(j.mean(), truth.mean(), scale=truth.std().to_numpy())


@pytest.mark.parametrize("triples", ["he", "dealer"])
def test_non_finite_or_oversized_join_values_are_refused_before_any_product(
    diabetes: pd.DataFrame, triples: str
) -> None:
    """Review finding: inf (corr) and |v| >= 2^40 (summed per group across the join) are
    refused in the consent round, naming the column — every party stops together."""
    from privcomp.errors import ConfigurationError, EncodingOverflowError

    fed, _ = _federation(diabetes, triples=triples)
    claims = fed._workers[2].datasets["claims"].copy()
    claims.loc[claims.index[0], "premium"] = np.inf
    fed._workers[2].datasets["claims"] = claims  # type: ignore[index]
    j = fed.table("patients").join(fed.table("claims"), on="patient_id")
    with pytest.raises(ConfigurationError, match="'premium'"):
        j.corr()
    claims.loc[claims.index[0], "premium"] = 2.0**41
    with pytest.raises(EncodingOverflowError, match=r"'premium'.*2\^40"):
        j.groupby("sex")["premium"].mean()
