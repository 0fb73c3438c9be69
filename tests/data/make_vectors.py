"""Generate tests/data/shamir_vectors.json with plain Python ints, independently of privcomp.

Run ``python tests/data/make_vectors.py`` to regenerate; the output is deterministic (the
"random" coefficients come from SHA-256 of a label, so no RNG and no privcomp code is involved).
Each vector fixes the polynomial f(X) = secret + c_1 X + ... + c_t X^t over GF(2^61 - 1) and
lists the shares (x, f(x)). Invalid vectors list share sets that must be refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

PRIME = (1 << 61) - 1


def det_field(label: str) -> int:
    """A deterministic pseudo-random field element derived from ``label``."""
    return int.from_bytes(hashlib.sha256(label.encode()).digest(), "big") % PRIME


def poly_eval(coeffs: list[int], x: int) -> int:
    """Evaluate sum coeffs[k] x^k mod p term by term (deliberately not Horner)."""
    return sum(c * pow(x, k, PRIME) for k, c in enumerate(coeffs)) % PRIME


def make_valid() -> list[dict[str, object]]:
    cases = [
        (1, 2, None),
        (1, 3, None),
        (2, 5, None),
        (3, 7, None),
        (4, 9, None),
        (8, 9, None),
        (2, 4, [3, 7, 11, PRIME - 1]),
        (1, 2, [2**32, 2**60 + 17]),
    ]
    secrets_per_case = [0, 1, PRIME - 1, 2**60, 123456789]
    vectors = []
    for idx, (t, n, xs) in enumerate(cases):
        xs = list(range(1, n + 1)) if xs is None else xs
        secrets = [*secrets_per_case, det_field(f"secret/{idx}")]
        coeffs = [[det_field(f"coef/{idx}/{j}/{k}") for k in range(1, t + 1)] for j in range(6)]
        shares = [[poly_eval([s, *c], x) for s, c in zip(secrets, coeffs, strict=True)] for x in xs]
        vectors.append(
            {
                "threshold": t,
                "n_parties": n,
                "x_coords": xs,
                "secret": secrets,
                "coefficients": coeffs,
                "shares": shares,
            }
        )
    return vectors


def make_invalid() -> list[dict[str, object]]:
    base = make_valid()[2]  # t = 2, n = 5
    xs, ys = base["x_coords"], base["shares"]
    return [
        {
            "why": "too few shares",
            "threshold": 2,
            "x_coords": xs[:2],
            "shares": ys[:2],
            "error": "NotEnoughSharesError",
        },
        {
            "why": "duplicate x-coordinate",
            "threshold": 2,
            "x_coords": [1, 1, 2],
            "shares": [ys[0], ys[0], ys[1]],
            "error": "ConfigurationError",
        },
        {
            "why": "x = 0",
            "threshold": 2,
            "x_coords": [0, 1, 2],
            "shares": ys[:3],
            "error": "ConfigurationError",
        },
        {
            "why": "element not below p",
            "threshold": 2,
            "x_coords": xs[:3],
            "shares": [ys[0], ys[1], [PRIME] * len(ys[2])],
            "error": "EncodingOverflowError",
        },
        {
            "why": "surplus share inconsistent",
            "threshold": 2,
            "x_coords": xs[:4],
            "shares": [ys[0], ys[1], ys[2], [(v + 1) % PRIME for v in ys[3]]],
            "error": "ProtocolError",
        },
    ]


def main() -> None:
    out = {
        "description": "Shamir t-of-n over GF(2^61 - 1); shares[i][j] = f_j(x_coords[i])",
        "prime": PRIME,
        "valid": make_valid(),
        "invalid": make_invalid(),
    }
    path = Path(__file__).with_name("shamir_vectors.json")
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
