"""Shamir t-of-n secret sharing over GF(2^61 - 1), vectorised over numpy arrays (layer: core).

Used where parties may drop out (secure aggregation, key recovery): any ``t + 1`` of the ``n``
shares reconstruct, so up to ``n - t - 1`` parties may disappear.

Protocol
--------
1. For every element ``s`` of the secret, draw ``t`` uniform coefficients and form
   ``f(X) = s + c_1 X + ... + c_t X^t`` over GF(p).
2. Party ``i`` receives ``(x_i, f(x_i))`` with public, distinct, non-zero ``x_i`` (default
   ``1..n``), evaluated by Horner's rule on whole arrays.
3. Reconstruction interpolates ``f(0) = sum_j lambda_j f(x_j)`` from any ``t + 1`` shares, with
   Lagrange coefficients ``lambda_j = prod_{m != j} x_m / (x_m - x_j)`` computed once on Python
   ints (inverses by Fermat) and applied to whole arrays.

Security
--------
Information-theoretic: for any ``t`` evaluation points the ``t`` shares are uniformly
distributed and independent of the secret (the ``t`` random coefficients give a bijection
between coefficient vectors and share vectors for each fixed secret), so any coalition of at
most ``t`` parties learns nothing. Honest-majority deployments use ``t < n/2``. Semi-honest:
shares are not authenticated, but shares beyond the first ``t + 1`` are checked for
consistency, so a corrupted surplus share aborts instead of silently changing the result.

Cost
----
Sharing: ``n * t`` field multiplications per element. Reconstruction: ``t + 1`` per element,
plus ``t + 1`` per extra share checked. Each field multiplication is about 20 numpy ``uint64``
operations (see :func:`privcomp.core.field.field_mul`).

References
----------
* A. Shamir, "How to share a secret", Communications of the ACM 22(11):612-613, 1979.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from privcomp.core.field import (
    PRIME,
    FieldArray,
    check_field,
    field_add,
    field_dot,
    field_inv,
    field_mul,
    field_random,
)
from privcomp.core.rng import RandomSource
from privcomp.errors import ConfigurationError, NotEnoughSharesError, ProtocolError

#: One party's Shamir share: its public x-coordinate and its array of field elements.
ShamirShare = tuple[int, FieldArray]


def _check_params(threshold: int, n_parties: int) -> None:
    if n_parties < 2:
        raise ConfigurationError(f"n_parties must be >= 2, got {n_parties}")
    if not 1 <= threshold < n_parties:
        raise ConfigurationError(
            f"threshold must satisfy 1 <= t < n_parties = {n_parties}, got t = {threshold}"
        )


def _check_xs(xs: Sequence[int]) -> None:
    for x in xs:
        if isinstance(x, bool) or not isinstance(x, int | np.integer):
            raise ConfigurationError("x-coordinates must be integers")
        if not 1 <= int(x) < PRIME:
            raise ConfigurationError("x-coordinates must be in [1, p): x = 0 would be the secret")
    if len({int(x) for x in xs}) != len(xs):
        raise ConfigurationError("x-coordinates must be distinct")


def lagrange_coefficients(xs: Sequence[int], at: int = 0) -> list[int]:
    """Lagrange basis values ``L_j(at)`` mod p for the distinct points ``xs`` (Python ints)."""
    coeffs = []
    for j, xj in enumerate(xs):
        num, den = 1, 1
        for m, xm in enumerate(xs):
            if m != j:
                num = num * (at - xm) % PRIME
                den = den * (xj - xm) % PRIME
        coeffs.append(num * field_inv(den) % PRIME)
    return coeffs


def shamir_share(
    secret: FieldArray,
    threshold: int,
    n_parties: int,
    rng: RandomSource,
    *,
    x_coords: Sequence[int] | None = None,
) -> list[ShamirShare]:
    """Split field elements into ``n_parties`` Shamir shares of degree ``threshold``.

    Parameters
    ----------
    secret:
        ``uint64`` array of field elements, each ``< p = 2^61 - 1`` (map signed values with
        :func:`privcomp.core.field.signed_to_field`).
    threshold:
        ``t``: any ``t`` shares reveal nothing, any ``t + 1`` reconstruct; ``1 <= t < n``.
    n_parties:
        Number of shares ``n >= 2``.
    rng:
        Randomness for the coefficients (cryptographic in production).
    x_coords:
        Distinct non-zero public evaluation points; default ``1, 2, ..., n``.

    Returns
    -------
    list of (int, ndarray)
        ``(x_i, f(x_i))`` for each party, share arrays with the secret's shape.

    Raises
    ------
    EncodingError, EncodingOverflowError
        If ``secret`` is not a ``uint64`` array of field elements.
    ConfigurationError
        For ``t`` outside ``[1, n)``, or bad x-coordinates (zero, duplicates, wrong count).
    """
    secret = check_field(secret, "secret")
    _check_params(threshold, n_parties)
    xs = list(range(1, n_parties + 1)) if x_coords is None else [int(x) for x in x_coords]
    if len(xs) != n_parties:
        raise ConfigurationError(f"expected {n_parties} x-coordinates, got {len(xs)}")
    _check_xs(xs)
    coeffs = [field_random(secret.shape, rng) for _ in range(threshold)]  # c_1 .. c_t
    shares: list[ShamirShare] = []
    for x in xs:
        xv = np.asarray(x, dtype=np.uint64)  # broadcasts
        acc = coeffs[-1]
        for c in reversed(coeffs[:-1]):
            acc = field_add(field_mul(acc, xv), c)
        shares.append((x, field_add(field_mul(acc, xv), secret)))
    return shares


def shamir_reconstruct(shares: Sequence[ShamirShare], threshold: int) -> FieldArray:
    """Recover the secret from any ``threshold + 1`` (or more) Shamir shares.

    The first ``t + 1`` shares are interpolated at 0; every further share is checked to lie on
    the same polynomial.

    Raises
    ------
    NotEnoughSharesError
        If fewer than ``t + 1`` shares are given (names how many were given and needed).
    ConfigurationError
        For ``t < 1``, duplicate or zero x-coordinates, or shares of different shapes.
    EncodingError, EncodingOverflowError
        If a share is not a ``uint64`` array of field elements.
    ProtocolError
        If surplus shares are inconsistent with the first ``t + 1`` (corrupted or mixed shares).
    """
    if threshold < 1:
        raise ConfigurationError(f"threshold must be >= 1, got {threshold}")
    if len(shares) < threshold + 1:
        raise NotEnoughSharesError(
            f"Shamir reconstruction with threshold t = {threshold} needs {threshold + 1} "
            f"shares; got {len(shares)}"
        )
    xs = [x for x, _ in shares]
    _check_xs(xs)
    ys = [check_field(y, f"share of x = {int(x)}") for x, y in shares]
    if any(y.shape != ys[0].shape for y in ys):
        raise ConfigurationError("Shamir shares have different shapes")
    base_x, base_y = xs[: threshold + 1], ys[: threshold + 1]
    secret = field_dot(lagrange_coefficients(base_x, 0), base_y)
    for x, y in zip(xs[threshold + 1 :], ys[threshold + 1 :], strict=True):
        expected = field_dot(lagrange_coefficients(base_x, int(x)), base_y)
        if not np.array_equal(expected, y):
            raise ProtocolError(
                f"Shamir share of x = {int(x)} is inconsistent with the first "
                f"{threshold + 1} shares (corrupted, or from another sharing)"
            )
    return secret


def shamir_add(a: Sequence[ShamirShare], b: Sequence[ShamirShare]) -> list[ShamirShare]:
    """Add two sharings party by party (same x-coordinates, same order): a sharing of the sum."""
    if [x for x, _ in a] != [x for x, _ in b]:
        raise ConfigurationError("sharings to add must use the same x-coordinates in order")
    return [(x, field_add(ya, yb)) for (x, ya), (_, yb) in zip(a, b, strict=True)]
