"""``import privcomp`` (and the pure core) has no side effects and pulls in no heavy backends."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = r"""
import json, logging, os, sys
env_before = dict(os.environ)
root_handlers_before = list(logging.getLogger().handlers)
import privcomp
{extra}
print(json.dumps({{
    "root_handlers": len(logging.getLogger().handlers) - len(root_handlers_before),
    "root_level_changed": logging.getLogger().level != logging.WARNING,
    "env_changed": dict(os.environ) != env_before,
    "heavy": sorted(m for m in {forbidden!r} if m in sys.modules),
    "has_version": isinstance(getattr(privcomp, "__version__", None), str),
}}))
"""

CORE = (
    "import privcomp.core.ring, privcomp.core.rng, privcomp.core.fixedpoint, "
    "privcomp.core.codec, privcomp.core.sharing, privcomp.core.beaver, privcomp.core.field, "
    "privcomp.core.shamir"
)


#: The package must not import backends eagerly; the pure core not even asyncio or protobuf.
TOP_FORBIDDEN = ("grpc", "phe", "tenseal")
CORE_FORBIDDEN = (*TOP_FORBIDDEN, "asyncio", "google.protobuf", "gmpy2", "cryptography")


@pytest.mark.parametrize(
    ("extra", "forbidden"),
    [("", TOP_FORBIDDEN), (CORE, CORE_FORBIDDEN)],
    ids=["privcomp", "privcomp.core"],
)
def test_import_has_no_side_effects(extra: str, forbidden: tuple[str, ...]) -> None:
    code = PROBE.format(extra=extra, forbidden=forbidden)
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # nothing printed or warned on import
    report = json.loads(proc.stdout)
    assert report == {
        "root_handlers": 0,
        "root_level_changed": False,
        "env_changed": False,
        "heavy": [],
        "has_version": True,
    }
