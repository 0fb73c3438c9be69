"""CKKS parameter presets and the 128-bit security bound (layer: backends; no tenseal import).

The bound is the HE-standard table that Microsoft SEAL ships in ``native/src/seal/util/
hestdparms.h``: the largest total ``coeff_modulus`` bit count that keeps 128-bit classical
security for a ternary secret and error standard deviation 3.2. privcomp refuses anything above
it before TenSEAL is even asked, and re-checks contexts it loads from bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from privcomp.errors import ConfigurationError, InsecureParameterError

#: poly_modulus_degree N -> max total coeff_modulus bits for 128-bit classical security
#: (SEAL hestdparms.h, SEAL_HE_STD_PARMS_128_TC; ternary secret, sigma = 3.2).
HE_STD_128_MAX_BITS: dict[int, int] = {
    1024: 27,
    2048: 54,
    4096: 109,
    8192: 218,
    16384: 438,
    32768: 881,
}

#: Largest prime SEAL accepts in a coeff_modulus chain, and the smallest useful one.
_MAX_PRIME_BITS = 60
_MIN_PRIME_BITS = 17


@dataclass(frozen=True)
class CKKSParams:
    """CKKS encryption parameters.

    Parameters
    ----------
    name:
        Preset name, or ``"custom"``.
    poly_modulus_degree:
        Ring dimension N (a power of two); a ciphertext holds N/2 slots.
    coeff_mod_bit_sizes:
        Bit sizes of the RNS primes of the ciphertext modulus, special prime last.
    scale_bits:
        log2 of the global encoding scale.
    error_bound:
        Documented absolute decryption-error bound of the supported circuits (add, products,
        dot, vector x matrix; depth <= ``depth``) for inputs in [-1, 1] and vectors up to the
        slot count, calibrated once (about 10x above the largest measured error) and frozen in
        the tests. The error grows with operand magnitudes: for inputs bounded by B, use
        B^2 x this (pass ``error_bound=`` to release decryption). Sizes release flooding.
    rel_error_bound:
        Documented relative error: TenSEAL resets the scale to exactly 2^scale_bits after each
        rescale although the prime only approximates it, which scales results by up to
        ``sum_i |q_i / 2^scale_bits - 1|`` over the rescaling primes (n8192: 8.1e-7).
        The full bound is ``error_bound + rel_error_bound * |result|`` (:meth:`error_for`).
    """

    name: str
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    error_bound: float
    rel_error_bound: float

    def error_for(self, magnitude: float) -> float:
        """Documented error bound for results of magnitude up to ``magnitude``."""
        return self.error_bound + self.rel_error_bound * abs(magnitude)

    @property
    def total_bits(self) -> int:
        """Total bit count of the coefficient modulus (what the security bound limits)."""
        return sum(self.coeff_mod_bit_sizes)

    @property
    def depth(self) -> int:
        """Number of rescaling multiplications the modulus chain supports."""
        return max(len(self.coeff_mod_bit_sizes) - 2, 0)

    @property
    def slot_count(self) -> int:
        """Number of plaintext slots per ciphertext (N/2)."""
        return self.poly_modulus_degree // 2

    @property
    def scale(self) -> float:
        """The global scale 2^scale_bits."""
        return float(2**self.scale_bits)


#: Named presets, each checked against :data:`HE_STD_128_MAX_BITS` at import and construction.
PRESETS: dict[str, CKKSParams] = {
    # Depth 1, scale 2^29 (~109 bits is all N=4096 allows): sums and one plaintext product.
    "n4096": CKKSParams("n4096", 4096, (40, 29, 40), 29, 2.0**-5, 2.0**-13),
    # Depth 2 (the TenSEAL tutorial parameters): sums, dots, vector x matrix, one ct x ct.
    "n8192": CKKSParams("n8192", 8192, (60, 40, 40, 60), 40, 2.0**-14, 2.0**-20),
    # Depth 7 for deeper circuits (polynomial activations, several products).
    "n16384": CKKSParams(
        "n16384", 16384, (60, 40, 40, 40, 40, 40, 40, 40, 60), 40, 2.0**-11, 2.0**-15
    ),
    # Depth 18; very large keys (Galois keys are gigabytes): for long circuits only.
    "n32768": CKKSParams("n32768", 32768, (60, *([40] * 18), 60), 40, 2.0**-10, 2.0**-12),
}


def check_security(poly_modulus_degree: int, total_bits: int) -> None:
    """Refuse parameters above the 128-bit HE-standard bound.

    Raises
    ------
    InsecureParameterError
        If N is not in the table or ``total_bits`` exceeds the bound for N (the message names
        N, the requested total and the bound).
    """
    bound = HE_STD_128_MAX_BITS.get(poly_modulus_degree)
    if bound is None:
        raise InsecureParameterError(
            f"poly_modulus_degree N={poly_modulus_degree} is not one of "
            f"{sorted(HE_STD_128_MAX_BITS)} (no 128-bit bound known)"
        )
    if total_bits > bound:
        raise InsecureParameterError(
            f"total coeff_modulus of {total_bits} bits exceeds the 128-bit security bound "
            f"of {bound} bits for N={poly_modulus_degree} (HE standard, SEAL hestdparms.h)"
        )


def validate(params: CKKSParams) -> CKKSParams:
    """Check a parameter set for security and internal consistency; return it unchanged.

    Raises
    ------
    InsecureParameterError
        Above the 128-bit bound.
    ConfigurationError
        Malformed chain (too few primes, prime sizes out of range, scale above the middle
        primes, which would make rescaling lose the message).
    """
    check_security(params.poly_modulus_degree, params.total_bits)
    bits = params.coeff_mod_bit_sizes
    if len(bits) < 2:
        raise ConfigurationError("coeff_mod_bit_sizes needs at least 2 primes")
    if any(not _MIN_PRIME_BITS <= b <= _MAX_PRIME_BITS for b in bits):
        raise ConfigurationError(
            f"every coeff_mod_bit_sizes entry must lie in [{_MIN_PRIME_BITS}, {_MAX_PRIME_BITS}]"
        )
    if not 1 <= params.scale_bits <= max(bits[1:-1] or bits[:1]):
        raise ConfigurationError(
            "scale_bits must be at least 1 and at most the size of the rescaling primes"
        )
    for bound in (params.error_bound, params.rel_error_bound):
        if not (math.isfinite(bound) and bound > 0):
            raise ConfigurationError("error bounds must be positive finite numbers")
    return params


def resolve(
    preset: str | None = None,
    *,
    poly_modulus_degree: int | None = None,
    coeff_mod_bit_sizes: tuple[int, ...] | list[int] | None = None,
    scale_bits: int | None = None,
) -> CKKSParams:
    """Return validated parameters from a preset name or an explicit custom set.

    Raises
    ------
    ConfigurationError
        Unknown preset, or a custom set given only in part.
    InsecureParameterError
        Above the 128-bit bound.
    """
    custom = (poly_modulus_degree, coeff_mod_bit_sizes, scale_bits)
    if preset is not None:
        if any(c is not None for c in custom):
            raise ConfigurationError("give either a preset or custom parameters, not both")
        if preset not in PRESETS:
            raise ConfigurationError(f"unknown CKKS preset {preset!r}; known: {sorted(PRESETS)}")
        return validate(PRESETS[preset])
    if poly_modulus_degree is None or coeff_mod_bit_sizes is None or scale_bits is None:
        raise ConfigurationError(
            "custom CKKS parameters need poly_modulus_degree, coeff_mod_bit_sizes and scale_bits"
        )
    # Measured: the error is ~2^(16 - scale_bits) at N=8192 and grows about linearly with N;
    # a custom set gets the same 10x margin as the presets.
    n = int(poly_modulus_degree)
    error_bound = 2.0 ** (26 - int(scale_bits)) * max(1.0, n / 8192)
    # Prime-vs-scale gap per rescale: conservative for every preset (checked against SEAL's
    # primes): depth x 2^(log2 N + 9 - scale_bits).
    depth = max(len(coeff_mod_bit_sizes) - 2, 1)
    rel_error_bound = depth * 2.0 ** (n.bit_length() - 1 + 9 - int(scale_bits))
    return validate(
        CKKSParams(
            "custom",
            n,
            tuple(int(b) for b in coeff_mod_bit_sizes),
            int(scale_bits),
            error_bound,
            rel_error_bound,
        )
    )


for _p in PRESETS.values():  # a preset above the bound is a bug: fail at import, loudly
    validate(_p)
