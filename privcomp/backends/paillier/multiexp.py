"""Multi-exponentiation ``prod_r b_r^(e_r) mod m`` by the bucket method (layer: backends).

A Paillier party that holds plaintext weights ``e_r`` and ciphertexts ``C_r`` computes
``Enc(sum_r e_r m_r)`` as ``prod_r C_r^(e_r) mod n^2``. One ``powmod`` per term costs about
``1.2 * bits`` modular multiplications; the bucket method of Pippenger (as popularised for
elliptic-curve multi-scalar multiplication) costs about ``ceil(bits / c) * (R + 2^(c+1)) + bits``
for ``R`` terms and ``c``-bit windows:

1. cut every exponent into ``c``-bit digits, most significant window first;
2. per window, square the accumulator ``c`` times, put every base into the bucket of its digit
   (one multiplication each), and fold the buckets into ``prod_d B_d^d`` with two running
   products (``2^(c+1)`` multiplications);
3. multiply the window's result into the accumulator.

For 10^5 terms with 105-bit exponents this is about 10 multiplications per term instead of
about 125. :func:`multi_exp_columns` computes several exponent columns over the same bases,
spread over forked workers by rows (raw bytes back, no pickle; see :mod:`.parallel`).

Timing. The exponents are the caller's own data, but *other* parties may see how long it takes.
Given a public exponent width (``bits=``), the computation does not depend on the exponents'
values: the window comes from the public sizes, every base is multiplied into a bucket (digit 0
included, into a discarded bucket), every bucket starts from the same full-size unit (so no
multiplication is by 1), the fold and the squarings always run, and there is no ``powmod``
fallback. Without ``bits`` the faster data-dependent path is used (public exponents only).
Nothing here draws randomness.

References
----------
* N. Pippenger, "On the evaluation of powers and monomials", SIAM J. Comput. 9(2), 1980.
* D. J. Bernstein, J. Doumen, T. Lange, J.-J. Oosterwijk, "Faster batch forgery
  identification", INDOCRYPT 2012 (the bucket method as used today).
"""

from __future__ import annotations

from collections.abc import Sequence

import gmpy2

from privcomp.backends.paillier import parallel
from privcomp.errors import ConfigurationError

#: Largest window tried (a table of 2^20 buckets is ~0.5 GB of 4096-bit residues).
MAX_WINDOW_BITS = 20
#: Relative cost of one ``powmod`` per bit of exponent, in modular multiplications.
_POWMOD_COST_PER_BIT = 1.2
#: Rows per worker below which forking does not pay.
PARALLEL_ROWS_THRESHOLD = 512


def bucket_cost(count: int, bits: int, window: int) -> int:
    """Modular multiplications of the bucket method for ``count`` terms of ``bits`` bits."""
    windows = -(-bits // window)
    return windows * (count + (2 << window)) + bits


def best_window(count: int, bits: int) -> int:
    """Return the window width ``c`` minimising :func:`bucket_cost` (``1 <= c <= 20``)."""
    if bits <= 0:
        return 1
    top = min(MAX_WINDOW_BITS, bits)
    return min(range(1, top + 1), key=lambda c: (bucket_cost(count, bits, c), c))


def _checked(bases: Sequence[int], exps: Sequence[int]) -> list[gmpy2.mpz]:
    if len(bases) != len(exps):
        raise ConfigurationError("multi_exp needs one exponent per base")
    out = [gmpy2.mpz(e) for e in exps]
    if any(e < 0 for e in out):
        raise ConfigurationError("multi_exp needs non-negative exponents")
    return out


def _fold(buckets: list[gmpy2.mpz | None], m: gmpy2.mpz) -> gmpy2.mpz | None:
    """``prod_d buckets[d]^d`` by two running products (``2 * len`` multiplications at most)."""
    running: gmpy2.mpz | None = None
    total: gmpy2.mpz | None = None
    for d in range(len(buckets) - 1, 0, -1):
        bucket = buckets[d]
        if bucket is not None:
            running = bucket if running is None else running * bucket % m
        if running is not None:
            total = running if total is None else total * running % m
    return total


def _uniform_bucket_method(
    bases: Sequence[gmpy2.mpz], exps: list[gmpy2.mpz], m: gmpy2.mpz, bits: int, c: int
) -> gmpy2.mpz:
    """The bucket method with a schedule that depends on the sizes only (see module notes)."""
    mask = (1 << c) - 1
    z = bases[0]  # a full-size unit: pre-fills every bucket, divided out once per window
    try:
        z_out = gmpy2.invert(gmpy2.powmod(z, mask * (mask + 1) // 2, m), m)
    except ZeroDivisionError as exc:
        raise ConfigurationError("constant-schedule multi_exp needs a unit first base") from exc
    acc = gmpy2.mpz(1)
    for w in range(-(-bits // c) - 1, -1, -1):
        for _ in range(c):
            acc = acc * acc % m
        buckets = [z] * (mask + 1)
        shift = w * c
        for b, e in zip(bases, exps, strict=True):
            d = int((e >> shift) & mask)
            buckets[d] = buckets[d] * b % m
        running = total = buckets[mask]
        for d in range(mask - 1, 0, -1):
            running = running * buckets[d] % m
            total = total * running % m
        acc = acc * total % m * z_out % m
    return acc % m


def _bucket_method(
    bases: Sequence[gmpy2.mpz], exps: list[gmpy2.mpz], m: gmpy2.mpz, bits: int, c: int
) -> gmpy2.mpz:
    mask = (1 << c) - 1
    acc = gmpy2.mpz(1)
    for w in range(-(-bits // c) - 1, -1, -1):
        if acc != 1:
            for _ in range(c):
                acc = acc * acc % m
        buckets: list[gmpy2.mpz | None] = [None] * (mask + 1)
        shift = w * c
        for b, e in zip(bases, exps, strict=True):
            d = (e >> shift) & mask
            if d:
                cur = buckets[d]
                buckets[d] = b if cur is None else cur * b % m
        total = _fold(buckets, m)
        if total is not None:
            acc = acc * total % m
    return acc % m


def multi_exp(
    bases: Sequence[int],
    exps: Sequence[int],
    modulus: int,
    *,
    window: int | None = None,
    bits: int | None = None,
) -> gmpy2.mpz:
    """Return ``prod_r bases[r]^exps[r] mod modulus``.

    Parameters
    ----------
    bases:
        Residues modulo ``modulus`` (any integers; they are not reduced first).
    exps:
        Non-negative exponents, one per base.
    modulus:
        The modulus (``n^2`` for Paillier ciphertexts).
    window:
        Window width ``c``; default :func:`best_window`. For few terms, where one ``powmod``
        per term is cheaper, the default falls back to that (not with ``bits``).
    bits:
        Public bound on the exponents' bit length: run the schedule that does not depend on
        their values (for secret exponents; the first base must then be a unit).

    Returns
    -------
    gmpy2.mpz
        The product, in ``[0, modulus)``.

    Raises
    ------
    ConfigurationError
        On a length mismatch, a negative exponent, an exponent wider than ``bits`` or a
        window outside ``[1, 20]``.
    """
    m = gmpy2.mpz(modulus)
    es = _checked(bases, exps)
    bs = [gmpy2.mpz(b) for b in bases]
    if window is not None and not 1 <= window <= MAX_WINDOW_BITS:
        raise ConfigurationError(f"window must lie in [1, {MAX_WINDOW_BITS}]")
    if bits is not None:
        if any(e >> bits for e in es):
            raise ConfigurationError(f"an exponent is wider than the declared {bits} bits")
        if not bs or bits <= 0:
            return gmpy2.mpz(1) % m
        return _uniform_bucket_method(bs, es, m, bits, window or best_window(len(bs), bits))
    bits = max((int(e.bit_length()) for e in es), default=0)
    if bits == 0:
        return gmpy2.mpz(1) % m
    c = window or best_window(len(bs), bits)
    if window is None and bucket_cost(len(bs), bits, c) > _POWMOD_COST_PER_BIT * bits * len(bs):
        acc = gmpy2.mpz(1)
        for b, e in zip(bs, es, strict=True):
            acc = acc * gmpy2.powmod(b, e, m) % m
        return acc % m
    return _bucket_method(bs, es, m, bits, c)


def multi_exp_columns(
    bases: Sequence[int],
    columns: Sequence[Sequence[int]],
    modulus: int,
    *,
    workers: int | None = None,
    bits: Sequence[int | None] | None = None,
) -> list[gmpy2.mpz]:
    """Return ``[multi_exp(bases, col, modulus) for col in columns]``, on every core.

    The rows are split into one block per worker; each forked worker computes every column over
    its block and writes the partial products as raw bytes into shared memory (no pickle); the
    caller multiplies the partial products.

    Parameters
    ----------
    bases:
        Residues modulo ``modulus``.
    columns:
        Exponent columns, each as long as ``bases``, non-negative.
    modulus:
        The modulus.
    workers:
        Processes (the caller included); default: every core when each gets at least
        :data:`PARALLEL_ROWS_THRESHOLD` rows.
    bits:
        Per column, the public exponent width for the value-independent schedule of
        :func:`multi_exp` (``None`` for a public column); default: every column public.

    Returns
    -------
    list of gmpy2.mpz
        One product per column.

    Raises
    ------
    ConfigurationError
        On a length mismatch or a negative exponent.
    """
    m = gmpy2.mpz(modulus)
    bs = [gmpy2.mpz(b) for b in bases]
    cols = [_checked(bs, col) for col in columns]
    widths = list(bits) if bits is not None else [None] * len(cols)
    if len(widths) != len(cols):
        raise ConfigurationError("multi_exp_columns needs one bit width per column")
    rows = len(bs)
    w = parallel.resolve_workers(workers, rows // PARALLEL_ROWS_THRESHOLD, 2)
    if w <= 1:
        return [multi_exp(bs, col, m, bits=b) for col, b in zip(cols, widths, strict=True)]
    width = (int(m.bit_length()) + 7) // 8
    per_block = len(cols) * width
    cuts = [rows * i // w for i in range(w + 1)]

    def compute(start: int, stop: int) -> bytes:
        out = []
        for blk in range(start, stop):
            lo, hi = cuts[blk], cuts[blk + 1]
            out += [
                multi_exp(bs[lo:hi], col[lo:hi], m, bits=b).to_bytes(width, "big")
                for col, b in zip(cols, widths, strict=True)
            ]
        return b"".join(out)

    blob, _ = parallel.fork_map_bytes(compute, w, per_block, w)
    result = [gmpy2.mpz(1)] * len(cols)
    for blk in range(w):
        for j in range(len(cols)):
            off = blk * per_block + j * width
            part = gmpy2.mpz.from_bytes(blob[off : off + width], "big")
            result[j] = result[j] * part % m
    return result


__all__ = [
    "MAX_WINDOW_BITS",
    "PARALLEL_ROWS_THRESHOLD",
    "best_window",
    "bucket_cost",
    "multi_exp",
    "multi_exp_columns",
]
