"""Local pre-aggregation of one party's rows for joint statistics (layer: protocols; pure numpy).

Each party reduces its rows to a handful of per-group, per-column aggregates before anything
is secret-shared. The two passes mirror pandas' own float64 algorithms (sum, then the sum of
squared deviations from the *pooled* mean), so the joint result is as accurate as pandas on the
pooled plaintext:

* pass 1: row count per group, non-missing count and sum per group and column, and for cov/corr
  the pairwise-complete counts ``N[j, k]`` and sums ``S[j, k] = Σ x_j`` over rows where both
  ``x_j`` and ``x_k`` are present (pandas' pairwise deletion);
* pass 2 (after the pooled means are known): ``Σ (x - mean)²`` per group and column, and the
  centred cross-products over pairwise-complete rows.

Missing values are NaN and are skipped, like pandas' ``skipna=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privcomp.types import FloatArray, IntArray


@dataclass(frozen=True, slots=True)
class FirstPass:
    """Pass-1 aggregates of one party (``G`` groups, ``m`` columns)."""

    rows: FloatArray  #: (G,) rows per group
    count: FloatArray  #: (G, m) non-missing values
    total: FloatArray  #: (G, m) sums
    pair_count: FloatArray | None = None  #: (m, m) pairwise-complete counts (ungrouped only)
    pair_sum: FloatArray | None = None  #: (m, m) Σ x_j over rows where x_j and x_k are present

    def flat(self) -> FloatArray:
        """All aggregates as one vector (the order :meth:`from_flat` reads back)."""
        parts = [self.rows.ravel(), self.count.ravel(), self.total.ravel()]
        if self.pair_count is not None and self.pair_sum is not None:
            parts += [self.pair_count.ravel(), self.pair_sum.ravel()]
        return np.concatenate(parts)

    @staticmethod
    def from_flat(vec: FloatArray, n_groups: int, m: int, pairs: bool) -> FirstPass:
        """Rebuild totals from the vector layout of :meth:`flat`."""
        g, gm, mm = n_groups, n_groups * m, m * m
        rows = vec[:g]
        count = vec[g : g + gm].reshape(g, m)
        total = vec[g + gm : g + 2 * gm].reshape(g, m)
        if not pairs:
            return FirstPass(rows, count, total)
        off = g + 2 * gm
        return FirstPass(
            rows,
            count,
            total,
            vec[off : off + mm].reshape(m, m),
            vec[off + mm : off + 2 * mm].reshape(m, m),
        )


def _group_sum(codes: IntArray, weights: FloatArray | None, n_groups: int) -> FloatArray:
    if n_groups == 1:
        # One group: numpy's pairwise summation is more accurate than bincount's running sum.
        return np.array([float(np.sum(weights)) if weights is not None else float(codes.size)])
    return np.bincount(codes, weights=weights, minlength=n_groups).astype(np.float64)


def first_pass(
    columns: list[FloatArray], codes: IntArray, n_groups: int, *, pairs: bool = False
) -> FirstPass:
    """Pass-1 aggregates; ``codes`` maps each row to a group in ``0..n_groups-1`` or -1 (none).

    ``pairs=True`` (ungrouped cov/corr) adds the pairwise-complete counts and sums.
    """
    m = len(columns)
    keep = codes >= 0
    every = bool(keep.all())
    kcodes = codes if every else codes[keep]
    rows = _group_sum(kcodes, None, n_groups)
    count = np.zeros((n_groups, m))
    total = np.zeros((n_groups, m))
    for j, col in enumerate(columns):
        x = col if every else col[keep]
        ok = ~np.isnan(x)
        if ok.all():
            count[:, j] = rows
            total[:, j] = _group_sum(kcodes, x, n_groups)
        else:
            count[:, j] = _group_sum(kcodes[ok], None, n_groups)
            total[:, j] = _group_sum(kcodes[ok], x[ok], n_groups)
    if not pairs:
        return FirstPass(rows, count, total)
    if n_groups == 1 and np.all(count == rows[0]):
        # No missing value: every pair of columns is complete on every row.
        return FirstPass(
            rows, count, total, np.full((m, m), rows[0]), np.repeat(total[0][:, None], m, axis=1)
        )
    pair_count, pair_sum = _pairwise_first(columns, keep)
    return FirstPass(rows, count, total, pair_count, pair_sum)


def _matrix(columns: list[FloatArray], keep: np.ndarray) -> FloatArray:
    mat = np.empty((int(keep.sum()), len(columns)), order="F")
    for j, col in enumerate(columns):
        mat[:, j] = col[keep]
    return mat


def _pairwise_first(columns: list[FloatArray], keep: np.ndarray) -> tuple[FloatArray, FloatArray]:
    m = len(columns)
    mat = _matrix(columns, keep)
    present = ~np.isnan(mat)
    if present.all():
        n = float(mat.shape[0])
        sums = np.array([float(np.sum(mat[:, j])) for j in range(m)])
        return np.full((m, m), n), np.repeat(sums[:, None], m, axis=1)
    pres = present.astype(np.float64)
    zeroed = np.where(present, mat, 0.0)
    # Counts below 2^53 are exact in float64 products.
    return pres.T @ pres, zeroed.T @ pres


@dataclass(frozen=True, slots=True)
class SecondPass:
    """Pass-2 aggregates of one party."""

    ssd: FloatArray  #: (G, m) Σ (x - mean_g)² per group and column
    cross: FloatArray | None = None  #: (m, m) Σ (x_j - mean_jk)(x_k - mean_kj), pairwise rows
    ssd_pair: FloatArray | None = None  #: (m, m) Σ (x_j - mean_jk)² over pairwise rows

    def flat(self) -> FloatArray:
        """All aggregates as one vector (the order :meth:`from_flat` reads back)."""
        parts = [self.ssd.ravel()]
        if self.cross is not None and self.ssd_pair is not None:
            parts += [self.cross.ravel(), self.ssd_pair.ravel()]
        return np.concatenate(parts)

    @staticmethod
    def from_flat(vec: FloatArray, n_groups: int, m: int, pairs: bool) -> SecondPass:
        """Rebuild totals from the vector layout of :meth:`flat`."""
        gm, mm = n_groups * m, m * m
        ssd = vec[:gm].reshape(n_groups, m)
        if not pairs:
            return SecondPass(ssd)
        return SecondPass(
            ssd, vec[gm : gm + mm].reshape(m, m), vec[gm + mm : gm + 2 * mm].reshape(m, m)
        )


def second_pass(
    columns: list[FloatArray],
    codes: IntArray,
    mean: FloatArray,
    *,
    pair_mean: FloatArray | None = None,
) -> SecondPass:
    """Pass-2 aggregates around the pooled group means ``mean`` (G, m).

    ``pair_mean[j, k]`` is the pooled mean of column j over the rows where j and k are both
    present; give it for cov/corr (ungrouped).
    """
    n_groups, m = mean.shape
    keep = codes >= 0
    every = bool(keep.all())
    kcodes = codes if every else codes[keep]
    ssd = np.zeros((n_groups, m))
    for j, col in enumerate(columns):
        x = col if every else col[keep]
        ok = ~np.isnan(x)
        if not ok.all():
            x, kc = x[ok], kcodes[ok]
        else:
            kc = kcodes
        mu = np.nan_to_num(mean[:, j])
        d = x - (mu[0] if n_groups == 1 else mu[kc])
        d *= d
        ssd[:, j] = _group_sum(kc, d, n_groups)
    if pair_mean is None:
        return SecondPass(ssd)
    cross, ssd_pair = _pairwise_second(columns, keep, np.nan_to_num(pair_mean))
    return SecondPass(ssd, cross, ssd_pair)


def _pairwise_second(
    columns: list[FloatArray], keep: np.ndarray, pair_mean: FloatArray
) -> tuple[FloatArray, FloatArray]:
    m = len(columns)
    mat = _matrix(columns, keep)
    present = ~np.isnan(mat)
    diag = np.diag(pair_mean)
    if present.all() and np.array_equal(pair_mean, np.repeat(diag[:, None], m, axis=1)):
        centred = mat - diag
        cross = centred.T @ centred
        return cross, np.repeat(np.diag(cross)[:, None], m, axis=1)
    cross = np.zeros((m, m))
    ssd_pair = np.zeros((m, m))
    for j in range(m):
        for k in range(m):
            both = present[:, j] & present[:, k]
            dx = mat[both, j] - pair_mean[j, k]
            dy = mat[both, k] - pair_mean[k, j]
            cross[j, k] = float(np.sum(dx * dy))
            ssd_pair[j, k] = float(np.sum(dx * dx))
    return cross, ssd_pair


def bin_codes(x: FloatArray, bins: FloatArray) -> IntArray:
    """Bin index of each value for left-closed bins ``[b_i, b_{i+1})``; -1 outside or NaN."""
    idx = np.searchsorted(bins, x, side="right") - 1
    idx[(idx >= len(bins) - 1) | np.isnan(x)] = -1
    return idx.astype(np.int64)
