"""privcomp: privacy-preserving joint computation.

``import privcomp`` has no side effects: no logging set-up, no argv or environment access, and
no import of grpc, phe or tenseal until they are used.
"""

from __future__ import annotations

__version__ = "0.1.0"
