"""T14 randomness hygiene (reference/security.md §2.6, §6).

Static: an AST scan of every ``privcomp/**/*.py`` (generated ``privcomp/proto/`` excluded) finds
no ``random`` import, no ``numpy.random`` use outside ``InsecureSeededRandom`` (and the listed
public-data generators, each with an explicit seed), and no ``InsecureSeededRandom`` outside its
allow-list. The scanner is itself checked on mutated sources, so it cannot pass vacuously.

Dynamic: the same 3-party program (input, mul, lt) runs twice on the same inputs with the
default randomness while every transport payload is recorded. Every payload is parsed by its
format; the secret-randomness words (seeds of input shares, masked openings, ciphertext bodies)
of the two runs must share **no** 64-bit value. Mutation checks: a dealer or a whole run
re-seeded with the same ``InsecureSeededRandom`` seed MUST produce common values.
"""

from __future__ import annotations

import ast
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import privcomp
from privcomp.core.codec import MAGIC, array_from_bytes
from privcomp.core.rng import InsecureSeededRandom
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.simulation import simulate_async
from privcomp.transport.memory import InMemoryNetwork

PKG = Path(privcomp.__file__).resolve().parent
EXCLUDED = (PKG / "proto",)

# (relative path, enclosing class or function) where numpy.random may be used.
NP_RANDOM_ALLOWED = {("core/rng.py", "InsecureSeededRandom")}
# Public, synthetic demo data: numpy generators allowed only when constructed with an explicit
# seed argument (reproducible, never secret).
NP_RANDOM_SEEDED_DATA = {"demo.py"}
_SEEDED_CTORS = {"default_rng", "RandomState", "Generator", "PCG64", "SeedSequence", "MT19937"}
# InsecureSeededRandom outside tests: its definition, and seeded *benchmark inputs* (public).
INSECURE_ALLOWED = {"core/rng.py", "jobs/kinds.py"}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str


def _sources() -> Iterator[tuple[str, str]]:
    for path in sorted(PKG.rglob("*.py")):
        if any(path.is_relative_to(e) for e in EXCLUDED):
            continue
        yield path.relative_to(PKG).as_posix(), path.read_text(encoding="utf-8")


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


class _Scanner(ast.NodeVisitor):
    """Collects randomness findings of one module; aliases are resolved per module."""

    def __init__(self, rel: str) -> None:
        self.rel = rel
        self.findings: list[Finding] = []
        self.alias: dict[str, str] = {}  # local name -> fully qualified module/object
        self.scope: list[str] = []

    def _add(self, node: ast.AST, what: str) -> None:
        self.findings.append(Finding(self.rel, getattr(node, "lineno", 0), what))

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.name == "random" or a.name.startswith("random."):
                self._add(node, f"import {a.name}")
            if a.name.startswith("numpy.random") and not self._np_random_allowed():
                self._add(node, f"import {a.name}")
            if a.asname:
                self.alias[a.asname] = a.name
            else:
                self.alias[a.name.split(".")[0]] = a.name.split(".")[0]
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        if node.level == 0 and (mod == "random" or mod.startswith("random.")):
            self._add(node, f"from {mod} import ...")
        for a in node.names:
            q = f"{mod}.{a.name}"
            self.alias[a.asname or a.name] = q
            if q.startswith("numpy.random") and not self._np_random_allowed():
                self._add(node, f"from {mod} import {a.name}")
            if q.endswith("rng.InsecureSeededRandom") and self.rel not in INSECURE_ALLOWED:
                self._add(node, "InsecureSeededRandom imported outside tests")
        self.generic_visit(node)

    def _scoped(self, node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _scoped  # type: ignore[assignment]

    def _qualified(self, node: ast.AST) -> str | None:
        dotted = _dotted(node)
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        if head not in self.alias:
            return None
        return self.alias[head] + ("." + rest if rest else "")

    def _np_random_allowed(self) -> bool:
        return any((self.rel, s) in NP_RANDOM_ALLOWED for s in self.scope)

    def visit_Call(self, node: ast.Call) -> None:
        q = self._qualified(node.func)
        if q and q.startswith("numpy.random.") and not self._np_random_allowed():
            ctor = q.rsplit(".", 1)[1]
            seeded = bool(node.args or node.keywords) and not (
                node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value is None
            )
            if self.rel in NP_RANDOM_SEEDED_DATA and ctor in _SEEDED_CTORS and seeded:
                for a in [*node.args, *(k.value for k in node.keywords)]:
                    self.visit(a)
                return  # explicit seed, public demo data: allowed (not descended into)
            self._add(node, f"{q}(...)")
            return
        if isinstance(node.func, ast.Name) and node.func.id == "__import__":
            self._check_dynamic_import(node)
        if q == "importlib.import_module":
            self._check_dynamic_import(node)
        self.generic_visit(node)

    def _check_dynamic_import(self, node: ast.Call) -> None:
        if node.args and isinstance(node.args[0], ast.Constant):
            name = str(node.args[0].value)
            if name == "random" or name.startswith("numpy.random"):
                self._add(node, f"dynamic import of {name}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        q = self._qualified(node)
        if q and (q == "numpy.random" or q.startswith("numpy.random.")):
            if not self._np_random_allowed():
                self._add(node, q)
            return  # do not report the inner prefixes of the same chain again
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        q = self.alias.get(node.id)
        is_np_random = q is not None and (q == "numpy.random" or q.startswith("numpy.random."))
        if is_np_random and not self._np_random_allowed():
            self._add(node, f"{node.id} -> {q}")
        if q == "privcomp.core.rng.InsecureSeededRandom" and self.rel not in INSECURE_ALLOWED:
            self._add(node, "InsecureSeededRandom used outside tests")


def scan_randomness(rel: str, source: str) -> list[Finding]:
    """Randomness findings of one module (``rel`` is its path relative to ``privcomp/``)."""
    scanner = _Scanner(rel)
    scanner.visit(ast.parse(source, filename=rel))
    return scanner.findings


def test_static_scan_of_privcomp_finds_no_insecure_randomness() -> None:
    findings: list[Finding] = []
    n_files = 0
    for rel, src in _sources():
        n_files += 1
        findings.extend(scan_randomness(rel, src))
    assert n_files > 50  # the scan really covers the package
    assert findings == [], "\n".join(f"{f.path}:{f.line}: {f.what}" for f in findings)


@pytest.mark.parametrize(
    ("rel", "source"),
    [
        ("protocols/x.py", "import random\n"),
        ("protocols/x.py", "import random as r\n"),
        ("protocols/x.py", "from random import randbytes\n"),
        ("protocols/x.py", "def f():\n    import random\n"),
        ("protocols/x.py", "import numpy as np\nx = np.random.rand(3)\n"),
        ("protocols/x.py", "import numpy as np\nnp.random.seed(1)\n"),
        ("protocols/x.py", "import numpy\ng = numpy.random.default_rng(5)\n"),
        ("protocols/x.py", "from numpy import random as npr\nnpr.integers(3)\n"),
        ("protocols/x.py", "from numpy.random import default_rng\ng = default_rng()\n"),
        ("protocols/x.py", "import numpy.random\n"),
        ("protocols/x.py", "import numpy as np\nRS = np.random.RandomState\n"),
        ("protocols/x.py", "g = __import__('random')\n"),
        ("protocols/x.py", "import importlib\ng = importlib.import_module('numpy.random')\n"),
        ("protocols/x.py", "from privcomp.core.rng import InsecureSeededRandom\n"),
        ("core/rng.py", "import numpy as np\ndef other():\n    return np.random.PCG64(1)\n"),
        ("demo.py", "import numpy as np\ng = np.random.default_rng()\n"),  # no seed
        ("demo.py", "import numpy as np\ng = np.random.default_rng(None)\n"),
        ("demo.py", "import numpy as np\nx = np.random.normal(size=3)\n"),  # global state
    ],
)
def test_scanner_flags_mutated_sources(rel: str, source: str) -> None:
    assert scan_randomness(rel, source), source


def test_scanner_accepts_the_allowed_forms() -> None:
    ok_rng = (
        "import numpy as np\nclass InsecureSeededRandom:\n"
        "    def __init__(self, s):\n        self.g = np.random.Generator(np.random.PCG64(s))\n"
    )
    assert scan_randomness("core/rng.py", ok_rng) == []
    assert scan_randomness("demo.py", "import numpy as np\ng = np.random.default_rng(7)\n") == []
    assert scan_randomness("protocols/x.py", "import secrets\nimport os\nos.urandom(3)\n") == []


# -- dynamic -------------------------------------------------------------------------------

_PK_MAGIC, _CT_MAGIC = b"PCPK", b"PCCT"
_CT_HEADER = struct.Struct(">4sB8sQI")
#: Words a uniform 64-bit value hits with probability 2^-47: small integers and their negatives
#: (opened bits of B2A conversions, header fields). Everything else must be fresh.
_TRIVIAL = 1 << 16


def _secret_words(tag: str, payload: bytes) -> np.ndarray:
    """The secret-randomness 64-bit words of one payload; unknown formats fail the test."""
    label = tag.split(":", 1)[-1]
    if payload[:4] == MAGIC:
        arr = array_from_bytes(payload)
        assert arr.dtype == np.uint64, f"{tag}: unexpected dtype {arr.dtype}"
        words = arr.reshape(-1)
        if label == "input":  # (kind, ndim, *shape, seed0, seed1): only the seed is secret
            words = words[-2:]
        return words
    if payload[:4] == _CT_MAGIC:  # header: magic, version, key fingerprint, count, width
        _, _, _, count, width = _CT_HEADER.unpack_from(payload)
        body = payload[_CT_HEADER.size :]
        assert len(body) == count * width
        return np.frombuffer(body[: len(body) // 8 * 8], dtype="<u8").astype(np.uint64)
    if payload[:4] == _PK_MAGIC:
        return np.zeros(0, dtype=np.uint64)  # a public key: public, not secret randomness
    raise AssertionError(f"{tag}: payload of unknown format {payload[:4]!r}; teach this test")


def _nontrivial(words: np.ndarray) -> list[int]:
    signed = words.view(np.int64)
    keep = np.abs(signed.astype(np.float64)) >= _TRIVIAL
    return [int(w) for w in words[keep]]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str, bytes]]:
    """Every payload posted on any in-memory network while the test runs."""
    log: list[tuple[int, str, bytes]] = []
    original = InMemoryNetwork.post

    def post(self: InMemoryNetwork, frm: int, to: int, tag: str, payload: bytes) -> None:
        log.append((frm, tag, bytes(payload)))
        original(self, frm, to, tag, payload)

    monkeypatch.setattr(InMemoryNetwork, "post", post)
    return log


async def _program(ctx: PartyContext, x: np.ndarray) -> Any:
    xs = await ctx.input(x)
    p = await xs[0].mul(xs[1])
    c = await xs[1].lt(xs[2])
    return await p.reveal(), await c.reveal()


_G = np.random.default_rng(14)
_INPUTS = [np.round(_G.normal(size=64) * 100, 3) for _ in range(3)]


async def _transcript(
    recorder: list[tuple[int, str, bytes]], size: int, **kw: Any
) -> tuple[set[int], int]:
    recorder.clear()
    inputs = [x[:size] for x in _INPUTS]
    outs = await simulate_async(_program, inputs, **kw)
    p, c = outs[0]
    np.testing.assert_allclose(p, inputs[0] * inputs[1], atol=1e-2)
    np.testing.assert_array_equal(c, (inputs[1] < inputs[2]).astype(np.int64))
    values: set[int] = set()
    n_words = n_kept = 0
    # A broadcast round posts one payload per peer: count each (sender, tag, payload) once.
    for _, tag, payload in dict.fromkeys(recorder):
        w = _secret_words(tag, payload)
        kept = _nontrivial(w)
        n_words += w.size
        n_kept += len(kept)
        values.update(kept)
    # Fresh randomness: the non-trivial words of one run are pairwise distinct, and trivial
    # words (opened B2A bits of fewer than 17 elements, packed) are rare.
    assert len(values) == n_kept
    assert n_kept >= 0.99 * n_words
    return values, n_words


async def _two_runs(
    recorder: list[tuple[int, str, bytes]], kw: Callable[[], dict[str, Any]], size: int = 64
) -> tuple[set[int], int]:
    """Two runs of the program; ``kw()`` gives each run's fresh simulate() arguments."""
    first, n1 = await _transcript(recorder, size, **kw())
    second, n2 = await _transcript(recorder, size, **kw())
    assert n1 == n2 > 1000  # same program, a substantial transcript
    return first & second, n1


async def test_two_runs_share_no_secret_word_dealer(recorder: list[tuple[int, str, bytes]]) -> None:
    common, _ = await _two_runs(recorder, kw=lambda: {"triples": "dealer"})
    assert common == set()


async def test_two_runs_share_no_secret_word_he(recorder: list[tuple[int, str, bytes]]) -> None:
    """The default source (Paillier OLE): ciphertext bodies and masked openings are fresh."""
    common, n = await _two_runs(recorder, kw=lambda: {"triples": "he"}, size=1)
    assert common == set()
    assert n > 10_000  # ciphertext bodies were compared too


async def test_mutation_reseeded_run_is_detected(recorder: list[tuple[int, str, bytes]]) -> None:
    """Whole run re-seeded with the same seed (a re-run reusing masks): must be caught."""
    common, n = await _two_runs(recorder, kw=lambda: {"triples": "dealer", "rng": _reseeded()})
    assert len(common) > 0.9 * n


async def test_mutation_reseeded_dealer_is_detected(recorder: list[tuple[int, str, bytes]]) -> None:
    """Only the dealer reuses its seed; the parties' own randomness is fresh: still caught
    (the masked openings ``x - a`` repeat when the inputs and the triples repeat)."""
    common, _ = await _two_runs(
        recorder,
        kw=lambda: {"triples": lambda n: TrustedDealer(n, rng=_reseeded())},
    )
    assert len(common) > 100


def _reseeded() -> InsecureSeededRandom:
    return InsecureSeededRandom(2024)
