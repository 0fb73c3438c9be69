"""Batched encryption and blinding factors, optionally on every core (layer: backends).

All randomness is drawn here, in the calling process, before :func:`parallel.map_chunks` forks
any worker (see :mod:`.parallel`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gmpy2

from privcomp.backends.paillier import parallel
from privcomp.core.rng import RandomSource

if TYPE_CHECKING:
    from privcomp.backends.paillier.keys import PublicKey
    from privcomp.backends.paillier.noise import CrtDjnNoise, DjnNoise

#: Batches at least this large use every core (encryption / decryption).
PARALLEL_ENCRYPT_THRESHOLD = 2000
PARALLEL_DECRYPT_THRESHOLD = 200


def residues(
    noise: DjnNoise | CrtDjnNoise,
    count: int,
    rng: RandomSource,
    width: int,
    workers: int | None,
) -> list[gmpy2.mpz]:
    """Return ``count`` random n-th residues modulo ``n^2`` (``width`` bytes each)."""
    step = noise.exponent_bytes
    alphas = rng.random_bytes(step * count)  # drawn here, never in a forked worker
    noise.prepare(count)

    def compute(start: int, stop: int) -> list[gmpy2.mpz]:
        return [noise.residue(alphas[i * step : (i + 1) * step]) for i in range(start, stop)]

    w = parallel.resolve_workers(workers, count, PARALLEL_ENCRYPT_THRESHOLD)
    return parallel.map_chunks(compute, count, width, w)


def encrypt_plaintexts(
    pk: PublicKey,
    pts: list[gmpy2.mpz],
    noise: DjnNoise | CrtDjnNoise,
    rng: RandomSource,
    workers: int | None,
) -> list[gmpy2.mpz]:
    """Return ``(1 + m*n) * r^n mod n^2`` for plaintexts ``pts`` in ``[0, n)``."""
    count = len(pts)
    step = noise.exponent_bytes
    alphas = rng.random_bytes(step * count)
    noise.prepare(count)
    n, n2 = pk._n, pk._nsquare

    def compute(start: int, stop: int) -> list[gmpy2.mpz]:
        residue = noise.residue
        return [
            (1 + pts[i] * n) * residue(alphas[i * step : (i + 1) * step]) % n2
            for i in range(start, stop)
        ]

    w = parallel.resolve_workers(workers, count, PARALLEL_ENCRYPT_THRESHOLD)
    return parallel.map_chunks(compute, count, pk.ciphertext_bytes, w)
