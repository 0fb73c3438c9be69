"""privcomp's own Paillier engine on gmpy2 (layer: backends).

* :mod:`.keys`, :mod:`.private_key`, :mod:`.keygen` — keys (>= 2048 bits) and the raw
  ciphertext layer (``raw_encrypt``, ``raw_add``, ``raw_mul``, ``raw_decrypt``, ...);
* :mod:`.fastdecrypt` — many small plaintexts per decryption (ciphertext packing, checked);
* :mod:`.noise` — fast blinding factors (Damgård-Jurik-Nielsen short exponents, fixed-base
  tables, CRT for the key holder);
* :mod:`.encoding` — python-paillier's base-16 encoding, one exponent per array;
* :mod:`.encrypted` — :class:`EncryptedArray`;
* :mod:`.packing` — :class:`PackedEncryptedArray`, many slots per ciphertext;
* :mod:`.batch`, :mod:`.parallel` — batches on forked workers over shared memory, no pickle;
* :mod:`.wire` — versioned byte formats; :mod:`.phe_interop` — the only importer of ``phe``.
"""

from __future__ import annotations

from privcomp.backends.paillier.encoding import BASE, DEFAULT_FLOAT_EXPONENT
from privcomp.backends.paillier.encrypted import EncryptedArray
from privcomp.backends.paillier.keygen import keygen
from privcomp.backends.paillier.keys import DEFAULT_KEY_BITS, MIN_KEY_BITS, PublicKey
from privcomp.backends.paillier.packing import PackedEncryptedArray, SlotLayout
from privcomp.backends.paillier.private_key import PrivateKey
from privcomp.backends.paillier.wire import ciphertexts_from_bytes, ciphertexts_to_bytes

__all__ = [
    "BASE",
    "DEFAULT_FLOAT_EXPONENT",
    "DEFAULT_KEY_BITS",
    "MIN_KEY_BITS",
    "EncryptedArray",
    "PackedEncryptedArray",
    "PrivateKey",
    "PublicKey",
    "SlotLayout",
    "ciphertexts_from_bytes",
    "ciphertexts_to_bytes",
    "keygen",
]
