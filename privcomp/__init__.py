"""privcomp: privacy-preserving joint computation — data that is usable but invisible.

Public entry points (imported lazily, so ``import privcomp`` stays cheap and side-effect free:
no logging set-up, no argv or environment access, and grpc, phe and tenseal are not imported
until they are used):

* :func:`simulate` / :func:`simulate_async` — run an SPMD multi-party program for N parties in
  one process on the in-memory network (tests, notebooks).
* :func:`local` — a federation of in-process parties with pandas-style joint statistics.
* :func:`connect` — the same federation object against a deployed coordinator (gRPC, mTLS).
* :mod:`privcomp.paillier`, :mod:`privcomp.ckks` — the homomorphic-encryption engines.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY: dict[str, tuple[str, str | None]] = {
    "simulate": ("privcomp.simulation", "simulate"),
    "simulate_async": ("privcomp.simulation", "simulate_async"),
    "local": ("privcomp.federation", "local"),
    "connect": ("privcomp.client", "connect"),
    "FixedPoint": ("privcomp.core.fixedpoint", "FixedPoint"),
    "SecretArray": ("privcomp.protocols.secret_array", "SecretArray"),
    "TrustedDealer": ("privcomp.protocols.dealer", "TrustedDealer"),
    "PaillierTripleSource": ("privcomp.protocols.he_triples", "PaillierTripleSource"),
    "errors": ("privcomp.errors", None),
    "paillier": ("privcomp.paillier", None),
    "ckks": ("privcomp.ckks", None),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import public names on first use (PEP 562)."""
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'privcomp' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
