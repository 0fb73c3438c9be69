"""Pure numeric core (layer: core).

Imports numpy, the standard library, :mod:`privcomp.errors` and :mod:`privcomp.types` only: no
asyncio, no I/O, no crypto or HE libraries. Everything here is a plain function of arrays.
"""
