"""Cryptographic backends (layer: backends): the Paillier engine on gmpy2, CKKS on TenSEAL, and
the AES-CTR pseudo-random generator. The only place ``phe`` and ``tenseal`` are imported, lazily.
"""
