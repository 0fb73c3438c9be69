"""Encrypted vector x plaintext matrix with few rotations (layer: backends).

TenSEAL's ``CKKSVector.mm`` uses the Halevi-Shoup diagonal method over all ``n`` rows: one
rotation per non-zero generalised diagonal, i.e. ``n`` rotations (4096 at N=8192: ~38 s for a
4096 x 16 matrix). TenSEAL's Python API has no single-rotation call, so this module drives
SEAL's evaluator through TenSEAL's own low-level binding (:mod:`tenseal.sealapi`) and moves
ciphertexts between the two bindings as SEAL-serialised bytes.

Protocol (S = slot count, m' = next power of two >= m, rotations are cyclic over S slots)
    1. ``z = sum_{d < m'} rot(v, d) * u_d`` with plaintexts
       ``u_d[i] = M[(i + d) mod S, i mod m']`` (zero outside the matrix). Every pair
       (row k, output r) is covered exactly once by the slot ``i = k - d`` with ``i = r mod m'``.
       ``rot(v, d)`` is built incrementally (one rotation by 1 each: one key switch per step).
    2. One rescale, then ``z += rot(z, s)`` for ``s = S/2, S/4, ..., m'``: slot ``r`` now holds
       ``sum_k v[k] M[k, r]`` (every slot ``i`` holds output ``i mod m'``, no other data).
Cost
    ``m' - 1 + log2(S / m')`` rotations and ``m'`` plaintext products (23 rotations for
    4096 x 16 at N=8192, against 4096 for TenSEAL's ``mm`` and 16 x 12 for per-column dots);
    multiplicative depth 1.
Security
    Only public evaluation keys (Galois keys) are used; works on public contexts.
References
    Halevi and Shoup, "Algorithms in HElib", CRYPTO 2014 (diagonal method); Juvekar,
    Vaikuntanathan and Chandrakasan, "GAZELLE", USENIX Security 2018 (hybrid rotate-and-sum
    for rectangular matrices).
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import threading
import weakref
from typing import Any

import numpy as np

from privcomp.backends.ckks import _lib
from privcomp.backends.ckks.params import CKKSParams
from privcomp.errors import ConfigurationError
from privcomp.types import FloatArray

_SHM = "/dev/shm"  # noqa: S108 - private 0700 directory below; only public-key material


def _varint(x: int) -> bytes:
    out = bytearray()
    while True:
        byte = x & 0x7F
        x >>= 7
        if x:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _ckks_vector_proto(ciphertext: bytes, size: int, scale: float) -> bytes:
    """Encode TenSEAL's ``CKKSVectorProto {sizes=1; ciphertexts=2; scale=3}`` by hand."""
    sizes = _varint(size)
    return (
        b"\x0a" + _varint(len(sizes)) + sizes
        + b"\x12" + _varint(len(ciphertext)) + ciphertext
        + b"\x19" + struct.pack("<d", scale)
    )  # fmt: skip


class RotationBridge:
    """SEAL evaluator with the Galois keys of one TenSEAL context.

    Parameters
    ----------
    ts_context:
        A ``tenseal.Context`` holding Galois keys (public or private).
    params:
        Its parameters (to rebuild the identical SEAL context: primes are deterministic).
    """

    def __init__(self, ts_context: Any, params: CKKSParams) -> None:
        if not ts_context.has_galois_keys():
            raise ConfigurationError(
                "vector x matrix needs Galois keys; export the public context with galois_keys=True"
            )
        sa = _lib.sealapi()
        self._sa = sa
        self._ts_context = ts_context
        self._scale = params.scale
        n = params.poly_modulus_degree
        parms = sa.EncryptionParameters(sa.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(n)
        parms.set_coeff_modulus(sa.CoeffModulus.Create(n, list(params.coeff_mod_bit_sizes)))
        self._seal = sa.SEALContext(parms, True, sa.SEC_LEVEL_TYPE.TC128)
        self._evaluator = sa.Evaluator(self._seal)
        self._encoder = sa.CKKSEncoder(self._seal)
        self.slot_count = n // 2
        base = _SHM if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK) else None
        self._dir = tempfile.mkdtemp(prefix="privcomp-ckks-", dir=base)  # mode 0700
        weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._lock = threading.Lock()
        self._counter = 0
        path = self._path()
        try:
            ts_context.data.galois_keys().save(path)
            self._galois = sa.GaloisKeys()
            self._galois.load(self._seal, path)
        finally:
            os.unlink(path)

    def _path(self) -> str:
        with self._lock:
            self._counter += 1
            return os.path.join(self._dir, f"ct{self._counter}")

    def to_seal(self, ts_vector: Any) -> Any:
        """Copy a single-ciphertext TenSEAL vector into a ``sealapi.Ciphertext``."""
        cts = ts_vector.ciphertext()
        if len(cts) != 1:
            raise ConfigurationError("vector x matrix needs a vector that fits one ciphertext")
        path = self._path()
        try:
            cts[0].save(path)
            ct = self._sa.Ciphertext()
            ct.load(self._seal, path)
        finally:
            os.unlink(path)
        return ct

    def from_seal(self, ct: Any, size: int) -> Any:
        """Wrap a ``sealapi.Ciphertext`` as a TenSEAL vector of ``size`` slots."""
        ts = _lib.tenseal()
        path = self._path()
        try:
            ct.save(path)
            with open(path, "rb") as fh:
                raw = fh.read()
        finally:
            os.unlink(path)
        return ts.ckks_vector_from(self._ts_context, _ckks_vector_proto(raw, size, self._scale))

    def pack_first_slots(self, ts_vectors: list[Any]) -> Any:
        """Gather slot 0 of each vector into slots ``0..m-1`` of one vector (mask, rotate, add).

        Used by the per-column-dot baseline; costs one level (the masks) and m - 1 rotations.
        """
        ev, sa = self._evaluator, self._sa
        acc = None
        for j, vec in enumerate(ts_vectors):
            ct = self.to_seal(vec)
            if j:
                ev.rotate_vector_inplace(ct, -j, self._galois)  # slot 0 -> slot j
            mask = np.zeros(self.slot_count)
            mask[j] = 1.0
            pt = sa.Plaintext()
            self._encoder.encode(mask.tolist(), ct.parms_id(), self._scale, pt)
            ev.multiply_plain_inplace(ct, pt)
            if acc is None:
                acc = ct
            else:
                ev.add_inplace(acc, ct)
        if acc is None:
            raise ConfigurationError("nothing to pack")
        ev.rescale_to_next_inplace(acc)
        acc.scale = self._scale
        return self.from_seal(acc, len(ts_vectors))

    def matmul_plain(self, ts_vector: Any, matrix: FloatArray) -> Any:
        """Return a TenSEAL vector of ``v @ matrix`` (``matrix`` is ``n x m``, float64)."""
        n, m = matrix.shape
        slots = self.slot_count
        m_pad = 1 << max(m - 1, 0).bit_length()
        if n > slots or m_pad > slots:
            raise ConfigurationError(
                f"vector x matrix supports up to {slots} rows and columns at this preset"
            )
        padded = np.zeros((slots, m_pad), dtype=np.float64)
        padded[:n, :m] = matrix
        idx = np.arange(slots)
        cols = idx % m_pad
        ev, sa = self._evaluator, self._sa
        cur = self.to_seal(ts_vector)
        acc = None
        for d in range(m_pad):
            if d:
                ev.rotate_vector_inplace(cur, 1, self._galois)
            diag = padded[(idx + d) % slots, cols]
            if not diag.any():
                continue
            pt = sa.Plaintext()
            self._encoder.encode(diag.tolist(), cur.parms_id(), self._scale, pt)
            prod = sa.Ciphertext()
            ev.multiply_plain(cur, pt, prod)
            if acc is None:
                acc = prod
            else:
                ev.add_inplace(acc, prod)
        if acc is None:  # all-zero matrix: SEAL refuses transparent products; TenSEAL encrypts 0
            return ts_vector.mm(np.zeros((n, m)).tolist())
        ev.rescale_to_next_inplace(acc)
        # As TenSEAL's auto-rescale does: snap the scale back to the exact global scale (the
        # prime differs from 2^scale_bits by < 2^-20 relative), so plain operands line up.
        acc.scale = self._scale
        step = slots // 2
        while step >= m_pad:
            rotated = sa.Ciphertext()
            ev.rotate_vector(acc, step, self._galois, rotated)
            ev.add_inplace(acc, rotated)
            step //= 2
        return self.from_seal(acc, m)
