"""Lazy access to TenSEAL (layer: backends). The only module that imports ``tenseal``.

``import privcomp`` and ``import privcomp.ckks`` work without the extra; the import happens on
first use, and a missing extra is reported as :class:`BackendUnavailableError`.
"""

from __future__ import annotations

from typing import Any

from privcomp.errors import BackendUnavailableError

_INSTALL_HINT = "the CKKS backend needs TenSEAL: pip install privcomp[ckks]"


def tenseal() -> Any:
    """Import and return :mod:`tenseal`, or raise :class:`BackendUnavailableError`."""
    try:
        import tenseal as ts  # lazy: optional extra
    except ImportError as exc:
        raise BackendUnavailableError(_INSTALL_HINT) from exc
    return ts


def sealapi() -> Any:
    """Import and return TenSEAL's low-level SEAL binding :mod:`tenseal.sealapi`."""
    try:
        import tenseal.sealapi as sa  # lazy: optional extra
    except ImportError as exc:
        raise BackendUnavailableError(_INSTALL_HINT) from exc
    return sa
