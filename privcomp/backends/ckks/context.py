"""CKKS contexts: keys, parameters, encryption and (release) decryption (layer: backends).

Security
    Parameters are checked against the HE-standard 128-bit bound before TenSEAL sees them
    (:mod:`privcomp.backends.ckks.params`). :meth:`CKKSContext.public` exports a copy without
    the secret key (TenSEAL's ``make_context_public`` works in place, so we never call it on the
    key holder's context). :meth:`CKKSContext.decrypt` returns raw slots that must stay with the
    key holder; :meth:`CKKSContext.decrypt_release` is the only decryption meant to leave it:
    noise-flooded, rounded and counted against a per-key cap
    (:mod:`privcomp.backends.ckks.release`).
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

import numpy as np

from privcomp.backends.ckks import _lib, wire
from privcomp.backends.ckks.linalg import RotationBridge
from privcomp.backends.ckks.params import PRESETS, CKKSParams, check_security, resolve, validate
from privcomp.backends.ckks.release import (
    DEFAULT_FLOOD_BITS,
    DEFAULT_RELEASE_CAP,
    ReleaseBudget,
    flood_and_round,
    flood_half_width,
    release_error_bound,
)
from privcomp.backends.ckks.vector import CKKSVector, plain_array
from privcomp.core.rng import RandomSource, default_random
from privcomp.errors import (
    CodecError,
    ConfigurationError,
    EncodingError,
    EncodingOverflowError,
    InsecureParameterError,
    MissingSecretKeyError,
)
from privcomp.types import ArrayLike, FloatArray


class CKKSContext:
    """Keys and parameters of one CKKS key pair (private or public).

    Create with :func:`context`, :meth:`public` or :meth:`from_bytes`.

    Attributes
    ----------
    params:
        The validated :class:`CKKSParams`.
    key_id:
        16 random public bytes naming the key pair (vectors carry it; mixing keys is refused).
    """

    def __init__(
        self,
        ts_context: Any,
        params: CKKSParams,
        *,
        key_id: bytes,
        budget: ReleaseBudget | None = None,
        flood_bits: int = DEFAULT_FLOOD_BITS,
        rng: RandomSource | None = None,
    ) -> None:
        self._ts = ts_context
        self.params = params
        self.key_id = key_id
        self._budget = budget if budget is not None else ReleaseBudget()
        self._flood_bits = flood_bits
        self._rng = rng if rng is not None else default_random()
        self._bridge: RotationBridge | None = None
        self._bridge_lock = threading.Lock()

    # -- introspection ---------------------------------------------------------------------

    @property
    def ts_context(self) -> Any:
        """The wrapped ``tenseal.Context`` (interop and benchmarks; do not make it public)."""
        return self._ts

    @property
    def tenseal_module(self) -> Any:
        """The imported :mod:`tenseal` module."""
        return _lib.tenseal()

    @property
    def is_private(self) -> bool:
        """True when the context holds the secret key."""
        return bool(self._ts.is_private())

    @property
    def has_galois_keys(self) -> bool:
        """True when rotations (dot, sum, vector x matrix) are possible."""
        return bool(self._ts.has_galois_keys())

    @property
    def slot_count(self) -> int:
        """Values per ciphertext."""
        return self.params.slot_count

    @property
    def release_cap(self) -> int:
        """Cap on released decryptions under this key."""
        return self._budget.cap

    @property
    def releases_used(self) -> int:
        """Released decryptions already spent under this key."""
        return self._budget.used

    @property
    def releases_remaining(self) -> int:
        """Released decryptions left before the key must be rotated."""
        return self._budget.remaining

    def __repr__(self) -> str:
        kind = "private" if self.is_private else "public"
        return f"CKKSContext(preset={self.params.name!r}, {kind}, galois={self.has_galois_keys})"

    # -- keys --------------------------------------------------------------------------------

    def public(self, galois_keys: bool = True) -> CKKSContext:
        """Return a copy without the secret key, safe to send to other parties.

        Parameters
        ----------
        galois_keys:
            Keep the Galois (rotation) keys, needed for ``dot``, ``sum`` and vector x matrix.
            They dominate the size (~35 MB at N=8192 against ~1.9 MB without).
        """
        ts = _lib.tenseal()
        if galois_keys and self.has_galois_keys:
            pub = self._ts.copy()  # make_context_public works in place: never on ours
            pub.make_context_public(generate_galois_keys=False, generate_relin_keys=False)
        else:
            raw = self._ts.serialize(save_secret_key=False, save_galois_keys=False)
            pub = ts.context_from(raw)
        pub.global_scale = self.params.scale
        if pub.is_private() or pub.has_secret_key():
            raise ConfigurationError("exported context still holds a secret key")
        return CKKSContext(
            pub, self.params, key_id=self.key_id, flood_bits=self._flood_bits, rng=self._rng
        )

    def rotation_bridge(self) -> RotationBridge:
        """The SEAL evaluator used by vector x matrix (built once per context, lazily)."""
        with self._bridge_lock:
            if self._bridge is None:
                self._bridge = RotationBridge(self._ts, self.params)
            return self._bridge

    # -- encryption ----------------------------------------------------------------------------

    @property
    def max_abs_input(self) -> float:
        """Largest magnitude :meth:`encrypt` accepts (value x scale must fit the first prime)."""
        return float(2.0 ** (self.params.coeff_mod_bit_sizes[0] - self.params.scale_bits - 1))

    def encrypt(self, values: ArrayLike) -> CKKSVector:
        """Encrypt a 1-D array of real numbers at the global scale.

        Raises
        ------
        EncodingError
            Not 1-D, empty, NaN or infinite.
        EncodingOverflowError
            A magnitude above :attr:`max_abs_input`.
        """
        arr = plain_array(values, "values")
        if arr.ndim != 1 or arr.size == 0:
            raise EncodingError(f"can only encrypt a non-empty 1-D vector, got shape {arr.shape}")
        bound = self.max_abs_input
        if np.abs(arr).max() > bound:
            raise EncodingOverflowError(
                f"values exceed the CKKS encoding bound {bound:g} of preset {self.params.name}",
                bound=bound,
            )
        ts = _lib.tenseal()
        return CKKSVector(self, ts.ckks_vector(self._ts, arr.tolist()))

    # -- decryption ----------------------------------------------------------------------------

    def _secret_key(self) -> Any:
        if not self._ts.has_secret_key():
            raise MissingSecretKeyError(
                "this CKKS context is public (no secret key): only the key holder can decrypt"
            )
        return self._ts.secret_key()

    def decrypt(self, vector: CKKSVector) -> FloatArray:
        """Decrypt for the key holder only: raw slots that must NOT leave this process.

        Raw CKKS decryptions expose the decryption error and hence the key (Li-Micciancio);
        use :meth:`decrypt_release` for anything that is sent or shown to others.

        Raises
        ------
        MissingSecretKeyError
            The context is public.
        ConfigurationError
            The vector belongs to another key pair.
        """
        sk = self._secret_key()
        if vector.context.key_id != self.key_id:
            raise ConfigurationError("the vector was encrypted under a different key")
        return np.asarray(vector.ts_vector.decrypt(sk), dtype=np.float64)

    def release_bound(
        self,
        decimals: int,
        *,
        magnitude: float = 1.0,
        flood_bits: int | None = None,
        error_bound: float | None = None,
    ) -> float:
        """Documented bound on ``|released - truth|`` per slot for :meth:`decrypt_release`.

        ``magnitude`` is the largest absolute value of the released vector.
        """
        return release_error_bound(
            decimals,
            self._release_error(magnitude, error_bound),
            self._flood_bits if flood_bits is None else flood_bits,
        )

    def _release_error(self, magnitude: float, error_bound: float | None) -> float:
        base = self.params.error_bound if error_bound is None else error_bound
        return base + self.params.rel_error_bound * abs(magnitude)

    def decrypt_release(
        self,
        vector: CKKSVector,
        decimals: int,
        *,
        flood_bits: int | None = None,
        error_bound: float | None = None,
    ) -> FloatArray:
        """Decrypt for release: noise-flooded, rounded to ``decimals``, counted against the cap.

        The flooding half-width is ``h = max(10**-decimals, 2**flood_bits * e)`` with
        ``e = error_bound + rel_error_bound * max|value|`` (the documented CKKS error of this
        vector), see :mod:`privcomp.backends.ckks.release`.

        Parameters
        ----------
        vector:
            Ciphertext to release.
        decimals:
            Declared precision of the released values.
        flood_bits:
            Flooding margin (default: the context's, 8).
        error_bound:
            Absolute decryption-error bound of the circuit (default: the preset's).

        Returns
        -------
        numpy.ndarray
            float64 values within :meth:`release_bound` (at ``magnitude = max|value|``) of the
            true result.

        Raises
        ------
        DecryptionBudgetExceededError
            The key reached its cap of released decryptions: rotate the key.
        MissingSecretKeyError
            The context is public.
        """
        bits = self._flood_bits if flood_bits is None else flood_bits
        flood_half_width(decimals, self._release_error(0.0, error_bound), bits)  # validate first
        self._secret_key()
        self._budget.spend()
        raw = self.decrypt(vector)
        magnitude = float(np.abs(raw).max()) if raw.size else 0.0
        half = flood_half_width(decimals, self._release_error(magnitude, error_bound), bits)
        return flood_and_round(raw, decimals=decimals, half_width=half, rng=self._rng)

    # -- serialisation -------------------------------------------------------------------------

    def to_bytes(self, *, secret_key: bool = False, galois_keys: bool = True) -> bytes:
        """Serialise with privcomp's versioned header around TenSEAL's bytes.

        Parameters
        ----------
        secret_key:
            Include the secret key (key holder's own backup only; never send it). The release
            counter travels with it so reloading does not reset the cap.
        galois_keys:
            Include the Galois keys (~35 MB at N=8192).
        """
        if secret_key:
            self._secret_key()
        keep_galois = galois_keys and self.has_galois_keys
        payload = self._ts.serialize(
            save_public_key=True,
            save_secret_key=secret_key,
            save_galois_keys=keep_galois,
            save_relin_keys=True,
        )
        flags = wire.FLAG_RELIN_KEYS
        flags |= wire.FLAG_SECRET_KEY if secret_key else 0
        flags |= wire.FLAG_GALOIS_KEYS if keep_galois else 0
        p = self.params
        header = wire.Header(
            kind=wire.KIND_CONTEXT,
            poly_modulus_degree=p.poly_modulus_degree,
            total_bits=p.total_bits,
            scale_bits=p.scale_bits,
            flags=flags,
            release_cap=self._budget.cap if secret_key else 0,
            releases=self._budget.used if secret_key else 0,
            key_id=self.key_id,
            prime_bits=p.coeff_mod_bit_sizes,
        )
        return wire.pack(header, payload)

    @classmethod
    def from_bytes(
        cls,
        data: bytes | bytearray | memoryview,
        *,
        rng: RandomSource | None = None,
        flood_bits: int = DEFAULT_FLOOD_BITS,
    ) -> CKKSContext:
        """Load a context written by :meth:`to_bytes`, re-checking the security bound.

        Raises
        ------
        CodecError
            Bad envelope, or a payload that does not match its header.
        InsecureParameterError
            Parameters above the 128-bit bound (checked before TenSEAL parses the payload,
            and again on the parsed context).
        """
        header, payload = wire.unpack(data, wire.KIND_CONTEXT)
        check_security(header.poly_modulus_degree, header.total_bits)
        if sum(header.prime_bits) != header.total_bits:
            raise CodecError("prime bit sizes do not add up to the header's total")
        params = _params_from_header(header)
        ts = _lib.tenseal()
        try:
            ts_ctx = ts.context_from(payload)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise CodecError("TenSEAL could not parse the CKKS context") from exc
        key_data = ts_ctx.data.seal_context().key_context_data()
        actual = (key_data.parms().poly_modulus_degree(), key_data.total_coeff_modulus_bit_count())
        check_security(*actual)
        if actual != (params.poly_modulus_degree, params.total_bits):
            raise CodecError("context payload parameters do not match the header")
        has_sk = bool(header.flags & wire.FLAG_SECRET_KEY)
        if bool(ts_ctx.has_secret_key()) != has_sk:
            raise CodecError("secret-key flag does not match the payload")
        ts_ctx.global_scale = params.scale
        budget = ReleaseBudget(header.release_cap, header.releases) if has_sk else None
        return cls(
            ts_ctx, params, key_id=header.key_id, budget=budget, flood_bits=flood_bits, rng=rng
        )


def _params_from_header(header: wire.Header) -> CKKSParams:
    for preset in PRESETS.values():
        if (
            preset.poly_modulus_degree == header.poly_modulus_degree
            and preset.coeff_mod_bit_sizes == header.prime_bits
            and preset.scale_bits == header.scale_bits
        ):
            return preset
    try:
        return resolve(
            poly_modulus_degree=header.poly_modulus_degree,
            coeff_mod_bit_sizes=header.prime_bits,
            scale_bits=header.scale_bits,
        )
    except InsecureParameterError:
        raise
    except ConfigurationError as exc:
        raise CodecError("context header holds invalid CKKS parameters") from exc


def context(
    preset: str | None = None,
    *,
    poly_modulus_degree: int | None = None,
    coeff_mod_bit_sizes: tuple[int, ...] | list[int] | None = None,
    scale_bits: int | None = None,
    galois_keys: bool = True,
    release_cap: int = DEFAULT_RELEASE_CAP,
    flood_bits: int = DEFAULT_FLOOD_BITS,
    rng: RandomSource | None = None,
) -> CKKSContext:
    """Create a private CKKS context (fresh key pair) from a preset or custom parameters.

    Parameters
    ----------
    preset:
        ``"n4096"``, ``"n8192"`` (the default when no custom parameter is given),
        ``"n16384"`` or ``"n32768"``.
    poly_modulus_degree, coeff_mod_bit_sizes, scale_bits:
        Custom parameters, checked against the 128-bit bound.
    galois_keys:
        Generate rotation keys (needed for dot, sum and vector x matrix).
    release_cap:
        Cap on :meth:`CKKSContext.decrypt_release` calls under this key (default 128).
    flood_bits:
        Default flooding margin of release decryptions.
    rng:
        Randomness for release flooding noise (default: the OS CSPRNG). SEAL draws key and
        encryption randomness from its own CSPRNG; the public key id comes from :mod:`secrets`.

    Raises
    ------
    InsecureParameterError
        Parameters above the HE-standard 128-bit bound.
    BackendUnavailableError
        TenSEAL is not installed (``pip install privcomp[ckks]``).
    """
    custom = (poly_modulus_degree, coeff_mod_bit_sizes, scale_bits)
    if preset is None and all(c is None for c in custom):
        preset = "n8192"
    params = resolve(
        preset,
        poly_modulus_degree=poly_modulus_degree,
        coeff_mod_bit_sizes=coeff_mod_bit_sizes,
        scale_bits=scale_bits,
    )
    validate(params)
    ts = _lib.tenseal()
    ts_ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=params.poly_modulus_degree,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
    )
    ts_ctx.global_scale = params.scale
    if galois_keys:
        ts_ctx.generate_galois_keys()
    source = rng if rng is not None else default_random()
    return CKKSContext(
        ts_ctx,
        params,
        key_id=secrets.token_bytes(16),  # never from an injected (maybe seeded) source: unique
        budget=ReleaseBudget(release_cap),
        flood_bits=flood_bits,
        rng=source,
    )
