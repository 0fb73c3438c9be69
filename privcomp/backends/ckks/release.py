"""Release decryption: noise flooding, rounding and a per-key decryption cap (layer: backends).

Why: Li and Micciancio (EUROCRYPT 2021, ePrint 2020/1533) recover CKKS secret keys from
*decrypted results*, because the low-order bits of a CKKS decryption carry the decryption error
``e``, a known linear function of the secret key. A value that leaves the key holder must not
expose those bits. privcomp therefore releases

    released = round(decrypt(c) + eta, decimals),   eta ~ Uniform[-h, h) per slot,
    h = max(10**-decimals, 2**flood_bits * error_bound),

with ``eta`` drawn from a cryptographic :class:`~privcomp.core.rng.RandomSource` (the OS CSPRNG
by default, never numpy's global generator).

Bounds (documented and tested):

* accuracy: ``|released - truth| <= error_bound + h + 0.5 * 10**-decimals``;
* two releases of the same ciphertext differ by at most ``2 * h + 10**-decimals``;
* leakage: the statistical distance between the released distribution with error ``e`` and
  with error 0 is at most ``|e| / (2h) <= 2**-(flood_bits + 1)`` per released slot.

The last line is a heuristic guard, like OpenFHE's default ``FIXED_NOISE_DECRYPT`` mode, not a
proof for many queries: provable flooding (Li, Micciancio, Schultz, Sorrell, CRYPTO 2022) needs
``h`` about 2^(lambda/2) times the error, paid in precision (raise ``flood_bits`` and the scale).
A cap on released decryptions per key (default 128, OpenFHE's documented N_d floor) bounds the
number of samples an adversary collects; beyond it the key must be rotated.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from privcomp.core.rng import RandomSource
from privcomp.errors import ConfigurationError, DecryptionBudgetExceededError
from privcomp.types import FloatArray

#: Default cap on released decryptions per secret key (OpenFHE's documented N_d = 128).
DEFAULT_RELEASE_CAP = 128
#: Default flooding margin: the noise half-width is at least 2^8 x the documented worst-case
#: decryption-error bound (at n8192: h >= 2^-6 ~ 0.0156, i.e. ~2^11 x the typical dot error).
DEFAULT_FLOOD_BITS = 8
MAX_DECIMALS = 15


def flood_half_width(decimals: int, error_bound: float, flood_bits: int) -> float:
    """Return the half-width ``h`` of the uniform flooding noise (see module docstring)."""
    _check_decimals(decimals)
    if flood_bits < 0:
        raise ConfigurationError("flood_bits must be >= 0")
    return max(10.0**-decimals, 2.0**flood_bits * error_bound)


def release_error_bound(decimals: int, error_bound: float, flood_bits: int) -> float:
    """Return the documented bound on ``|released - truth|`` for one slot."""
    h = flood_half_width(decimals, error_bound, flood_bits)
    return error_bound + h + 0.5 * 10.0**-decimals


def flood_and_round(
    values: FloatArray, *, decimals: int, half_width: float, rng: RandomSource
) -> FloatArray:
    """Add uniform noise in ``[-half_width, half_width)`` from ``rng`` and round.

    Parameters
    ----------
    values:
        Raw CKKS decryption (float64), which never leaves the key holder.
    decimals:
        Declared precision of the release.
    half_width:
        Flooding half-width ``h`` (from :func:`flood_half_width`).
    rng:
        Cryptographic randomness source.
    """
    if not (math.isfinite(half_width) and half_width > 0):
        raise ConfigurationError("flooding half-width must be positive and finite")
    n = values.size
    raw = np.frombuffer(rng.random_bytes(8 * n), dtype="<u8").astype(np.uint64)
    # 53 random bits -> a float64 uniform in [0, 1) without rounding bias.
    unit = (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53
    noise = (2.0 * unit - 1.0) * half_width
    flooded = values.astype(np.float64, copy=False) + noise.reshape(values.shape)
    return np.round(flooded, decimals)


def _check_decimals(decimals: int) -> None:
    if not 0 <= decimals <= MAX_DECIMALS:
        raise ConfigurationError(f"decimals must lie in [0, {MAX_DECIMALS}]")


class ReleaseBudget:
    """Thread-safe counter of released decryptions under one secret key.

    Parameters
    ----------
    cap:
        Maximum number of release decryptions (one per :meth:`spend`).
    used:
        Releases already spent (when a private context is reloaded from bytes).
    """

    def __init__(self, cap: int = DEFAULT_RELEASE_CAP, used: int = 0) -> None:
        if cap < 1:
            raise ConfigurationError("release cap must be >= 1")
        if used < 0:
            raise ConfigurationError("used releases must be >= 0")
        self._cap = cap
        self._used = used
        self._lock = threading.Lock()

    @property
    def cap(self) -> int:
        """The configured cap."""
        return self._cap

    @property
    def used(self) -> int:
        """Releases spent so far."""
        return self._used

    @property
    def remaining(self) -> int:
        """Releases left before the key must be rotated."""
        return max(self._cap - self._used, 0)

    def spend(self) -> None:
        """Count one release, or refuse if the cap is reached.

        Raises
        ------
        DecryptionBudgetExceededError
            When ``cap`` releases were already made under this key.
        """
        with self._lock:
            if self._used >= self._cap:
                raise DecryptionBudgetExceededError(
                    f"this CKKS key reached its cap of {self._cap} released decryptions; "
                    "rotate the key: create a new context (ckks.context(...)), re-encrypt, "
                    "and distribute its public part"
                )
            self._used += 1
